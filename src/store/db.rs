//! The SQL: embedded, versioned migrations and every statement the store runs, all with bound
//! parameters (`$1`, which SQLite and PostgreSQL both read), never text built from values.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};
use sqlx::AnyPool;
use sqlx::any::AnyRow;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Row, Transaction};

use super::records::{CallRecord, FeedbackRecord};
use super::writer::Item;

/// The migrations, in version order, compiled into the binary. A migration once released is
/// never edited (sqlx refuses a database whose applied migration's checksum changed): changes
/// are new files with the next version.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "audit store",
    include_str!("migrations/0001_audit_store.sql"),
)];

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Create the tables, or bring them to the current version.
pub(crate) async fn migrate(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(pool).await.map_err(Into::into)
}

/// Write a batch in one transaction. Every insert ignores a row already there, so a batch
/// retried after a commit whose answer was lost writes nothing twice.
pub(crate) async fn write_batch(pool: &AnyPool, items: &[Item]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for item in items {
        match item {
            Item::Call(c) => insert_call(&mut tx, c).await?,
            Item::Feedback(f) => insert_feedback(&mut tx, f).await?,
            Item::Close(_) => {}
        }
    }
    tx.commit().await
}

async fn insert_call(
    tx: &mut Transaction<'_, sqlx::Any>,
    c: &CallRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hook_calls (request_id, received_at, hook, hook_instance, service_id, \
         client_iss, client_sub, client_tenant, client_jti_sha256, patient_id, encounter_id, \
         fhir_server_host, response_body, request_body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&c.request_id)
    .bind(&c.received_at)
    .bind(&c.header.hook)
    .bind(&c.header.hook_instance)
    .bind(&c.service_id)
    .bind(c.client.iss.as_deref())
    .bind(c.client.sub.as_deref())
    .bind(c.client.tenant.as_deref())
    .bind(c.client.jti_sha256.as_deref())
    .bind(&c.header.patient_id)
    .bind(c.header.encounter_id.as_deref())
    .bind(c.header.fhir_server_host.as_deref())
    .bind(&c.response_body)
    .bind(c.request_body.as_deref())
    .execute(&mut **tx)
    .await?;
    for (i, o) in c.orders.iter().enumerate() {
        sqlx::query(
            "INSERT INTO determinations (request_id, position, decided_at, patient_id, order_ref, \
             billing_code, covered, criteria, policy_id, policy_version, policy_effective, \
             assertion_id, card_uuid, card_summary) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (request_id, position) DO NOTHING",
        )
        .bind(&c.request_id)
        .bind(i as i64)
        .bind(&c.received_at)
        .bind(&c.header.patient_id)
        .bind(o.order_ref.as_deref())
        .bind(o.billing_code.as_deref())
        .bind(o.covered)
        .bind(o.criteria.to_string())
        .bind(&o.policy_id)
        .bind(&o.policy_version)
        .bind(&o.policy_effective)
        .bind(o.assertion_id.as_deref())
        .bind(o.card_uuid.as_deref())
        .bind(o.card_summary.as_deref())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_feedback(
    tx: &mut Transaction<'_, sqlx::Any>,
    f: &FeedbackRecord,
) -> Result<(), sqlx::Error> {
    // The assertion the card carried, when the card is known (same batch or earlier).
    sqlx::query(
        "INSERT INTO feedback (id, received_at, request_id, service_id, card_uuid, assertion_id, \
         outcome, override_reason, accepted_suggestions, has_comment, outcome_timestamp, client_iss) \
         VALUES ($1, $2, $3, $4, $5, \
         (SELECT MAX(assertion_id) FROM determinations WHERE card_uuid = $5), \
         $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&f.id)
    .bind(&f.received_at)
    .bind(&f.request_id)
    .bind(&f.service_id)
    .bind(&f.card_uuid)
    .bind(&f.outcome)
    .bind(f.override_reason.as_deref())
    .bind(f.accepted_suggestions)
    .bind(i64::from(f.has_comment))
    .bind(&f.outcome_timestamp)
    .bind(f.client_iss.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Delete what is older than `cutoff` (stored time text) and replay entries past their time.
/// Returns the number of hook calls deleted.
pub(crate) async fn purge(
    pool: &AnyPool,
    cutoff: Option<&str>,
    now_unix: i64,
) -> Result<u64, sqlx::Error> {
    let mut calls = 0;
    if let Some(cutoff) = cutoff {
        sqlx::query("DELETE FROM feedback WHERE received_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM determinations WHERE decided_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        calls = sqlx::query("DELETE FROM hook_calls WHERE received_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected();
    }
    sqlx::query("DELETE FROM jti_seen WHERE forget_after < $1")
        .bind(now_unix)
        .execute(pool)
        .await?;
    Ok(calls)
}

/// Remember (`iss`, hash of `jti`) until `forget_after`; `true` when it was already
/// remembered by anyone (a replay). An entry past its time is taken over, as a new one.
pub(crate) async fn remember_jti(
    pool: &AnyPool,
    iss: &str,
    jti_sha256: &str,
    forget_after: i64,
    now_unix: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO jti_seen (iss, jti_sha256, forget_after) VALUES ($1, $2, $3) \
         ON CONFLICT (iss, jti_sha256) DO UPDATE SET forget_after = excluded.forget_after \
         WHERE jti_seen.forget_after < $4",
    )
    .bind(iss)
    .bind(jti_sha256)
    .bind(forget_after)
    .bind(now_unix)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 0)
}

/// The columns of a determination, as a literal so statements are `concat!`ed at compile time.
macro_rules! determination_columns {
    () => {
        "d.request_id, d.position, d.decided_at, d.patient_id, d.order_ref, d.billing_code, \
         d.covered, d.criteria, d.policy_id, d.policy_version, d.policy_effective, \
         d.assertion_id, d.card_uuid, d.card_summary"
    };
}

fn opt(row: &AnyRow, column: &str) -> Value {
    row.try_get::<Option<String>, _>(column)
        .ok()
        .flatten()
        .map_or(Value::Null, Value::String)
}

fn determination_json(row: &AnyRow) -> Value {
    let criteria = row
        .try_get::<String, _>("criteria")
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    json!({
        "assertionId": opt(row, "assertion_id"),
        "decidedAt": opt(row, "decided_at"),
        "requestId": opt(row, "request_id"),
        "patientId": opt(row, "patient_id"),
        "order": opt(row, "order_ref"),
        "billingCode": opt(row, "billing_code"),
        "covered": opt(row, "covered"),
        "criteria": criteria,
        "policy": {
            "id": opt(row, "policy_id"),
            "version": opt(row, "policy_version"),
            "effective": opt(row, "policy_effective"),
        },
        "card": {"uuid": opt(row, "card_uuid"), "summary": opt(row, "card_summary")},
    })
}

/// The determination that handed out `assertion_id`, with its call and feedback, as JSON.
pub(crate) async fn show(pool: &AnyPool, assertion_id: &str) -> Result<Option<Value>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        determination_columns!(),
        ", c.hook, c.hook_instance, c.service_id, c.client_iss, \
         c.client_sub, c.client_tenant, c.client_jti_sha256, c.encounter_id, c.fhir_server_host, \
         c.response_body, c.request_body \
         FROM determinations d JOIN hook_calls c ON c.request_id = d.request_id \
         WHERE d.assertion_id = $1 ORDER BY d.decided_at LIMIT 1"
    );
    let Some(row) = sqlx::query(sql)
        .bind(assertion_id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let mut out = determination_json(&row);
    let body = |column| {
        row.try_get::<Option<String>, _>(column)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null)
    };
    out["call"] = json!({
        "hook": opt(&row, "hook"),
        "hookInstance": opt(&row, "hook_instance"),
        "serviceId": opt(&row, "service_id"),
        "encounterId": opt(&row, "encounter_id"),
        "fhirServerHost": opt(&row, "fhir_server_host"),
        "client": {
            "iss": opt(&row, "client_iss"),
            "sub": opt(&row, "client_sub"),
            "tenant": opt(&row, "client_tenant"),
            "jtiSha256": opt(&row, "client_jti_sha256"),
        },
        "response": body("response_body"),
        "request": body("request_body"),
    });
    let feedback = sqlx::query(
        "SELECT received_at, outcome, override_reason, accepted_suggestions, has_comment, \
         outcome_timestamp FROM feedback WHERE assertion_id = $1 \
         OR (card_uuid = $2 AND card_uuid <> '') ORDER BY received_at",
    )
    .bind(assertion_id)
    .bind(out["card"]["uuid"].as_str().unwrap_or(""))
    .fetch_all(pool)
    .await?;
    out["feedback"] = feedback
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("receivedAt".into(), opt(r, "received_at"));
            m.insert("outcome".into(), opt(r, "outcome"));
            m.insert("overrideReason".into(), opt(r, "override_reason"));
            m.insert(
                "acceptedSuggestions".into(),
                json!(r.try_get::<i64, _>("accepted_suggestions").unwrap_or(0)),
            );
            m.insert(
                "hasComment".into(),
                json!(r.try_get::<i64, _>("has_comment").unwrap_or(0) != 0),
            );
            m.insert("outcomeTimestamp".into(), opt(r, "outcome_timestamp"));
            Value::Object(m)
        })
        .collect();
    Ok(Some(out))
}

/// Determinations, newest first, optionally of one patient and from a time on.
pub(crate) async fn list(
    pool: &AnyPool,
    patient: Option<&str>,
    since: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        determination_columns!(),
        " FROM determinations d \
         WHERE ($1 IS NULL OR d.patient_id = $1) AND ($2 IS NULL OR d.decided_at >= $2) \
         ORDER BY d.decided_at DESC, d.position LIMIT $3"
    );
    let rows = sqlx::query(sql)
        .bind(patient)
        .bind(since)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(determination_json).collect())
}
