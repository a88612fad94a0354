//! The SQL: embedded, versioned migrations and every statement the store runs, all with bound
//! parameters (`$1`, which SQLite and PostgreSQL both read), never text built from values.
//! PostgreSQL's calls and determinations go in by `COPY ... FROM STDIN` instead, the values as
//! length-prefixed fields of the binary copy format ([`CopyRows`]), under a fixed statement.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Any, AnyPool, Connection as _, QueryBuilder, Row};

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

/// A call's columns, in the order every statement writing calls lists them.
macro_rules! call_columns {
    () => {
        "request_id, received_at, hook, hook_instance, service_id, client_iss, client_sub, \
         client_tenant, client_jti_sha256, patient_id, encounter_id, fhir_server_host, \
         response_body, request_body"
    };
}

/// A determination's columns, in the order every statement writing determinations lists them.
macro_rules! determination_insert_columns {
    () => {
        "request_id, position, decided_at, patient_id, order_ref, billing_code, covered, \
         criteria, policy_id, policy_version, policy_effective, assertion_id, card_uuid, \
         card_summary"
    };
}

/// PostgreSQL's batch statements, one per table, each reading the batch's rows of that table
/// from one JSON array parameter. The text is fixed; values only ever arrive as the bound
/// parameter. Every insert ignores a row already there, so a batch retried after a commit whose
/// answer was lost writes nothing twice. Feedback always goes this way; calls and
/// determinations only when their `COPY` met a row already there ([`write_postgres`]).
struct Statements {
    calls: &'static str,
    determinations: &'static str,
    feedback: &'static str,
}

/// SQLite's inserts of calls and determinations: `INSERT INTO table (columns) VALUES (?, ...),
/// (?, ...) ... ON CONFLICT ... DO NOTHING`, one row of bound parameters per record, the
/// `VALUES` list written by sqlx's `QueryBuilder` (placeholders only: no value is ever part of
/// the text). Rows go in statements of [`SQLITE_ROWS_PER_STATEMENT`] rows and, for the rest, of
/// 64, 32, ... 1 rows ([`sqlite_chunks`]).
///
/// Why not one JSON array parameter, as on PostgreSQL: SQLite unpacks it with `json_each`,
/// whose `value` it computes again for each column that reads it, rendering the row object to
/// text and parsing it again each time: with a call's 7 KB response body in the row, that was
/// 14 renders and parses per record, most of what a record cost (`store::writer_cost`: 147-158
/// µs of CPU per typical record; BENCHMARKS.md). Bound, each value is copied once.
struct Insert {
    head: &'static str,
    tail: &'static str,
}

const SQLITE_CALLS: Insert = Insert {
    head: concat!("INSERT INTO hook_calls (", call_columns!(), ") "),
    tail: " ON CONFLICT (request_id) DO NOTHING",
};

const SQLITE_DETERMINATIONS: Insert = Insert {
    head: concat!(
        "INSERT INTO determinations (",
        determination_insert_columns!(),
        ") "
    ),
    tail: " ON CONFLICT (request_id, position) DO NOTHING",
};

/// The most rows in one SQLite statement (a power of two; 14 parameters a row, far below
/// SQLite's limit of 32,766).
const SQLITE_ROWS_PER_STATEMENT: usize = 128;

/// `rows` in statements of [`SQLITE_ROWS_PER_STATEMENT`] rows, then of the rest's binary digits
/// (64, 32, ..., 1 rows). Why not one statement per batch: sqlx keeps each statement text it
/// prepared (up to 100 per connection), and a text per batch size filled that cache with large
/// statements (peak RSS of the typical load went from 54 to 92 MiB); this way a table has at
/// most eight texts, each prepared once per connection.
fn sqlite_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= SQLITE_ROWS_PER_STATEMENT {
            SQLITE_ROWS_PER_STATEMENT
        } else {
            1 << rest.len().ilog2()
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// SQLite's feedback insert reads its rows from one JSON array parameter (few and small rows;
/// the statement looks up each card's assertion): `json_each` yields each row object as
/// `value`; `->>` reads a member as SQL text or integer (NULL for JSON null). `WHERE true` lets
/// the parser tell the SELECT's end from the `ON CONFLICT` clause. The assertion the card
/// carried, when the card is known (this batch's determinations are written first).
const SQLITE_FEEDBACK: &str = "INSERT INTO feedback (id, received_at, request_id, service_id, \
     card_uuid, assertion_id, outcome, override_reason, accepted_suggestions, has_comment, \
     outcome_timestamp, client_iss) \
     SELECT value ->> '$.id', value ->> '$.received_at', value ->> '$.request_id', \
     value ->> '$.service_id', value ->> '$.card_uuid', \
     (SELECT MAX(d.assertion_id) FROM determinations d \
      WHERE d.card_uuid = value ->> '$.card_uuid'), \
     value ->> '$.outcome', value ->> '$.override_reason', \
     value ->> '$.accepted_suggestions', value ->> '$.has_comment', \
     value ->> '$.outcome_timestamp', value ->> '$.client_iss' \
     FROM json_each($1) WHERE true ON CONFLICT (id) DO NOTHING";

/// PostgreSQL: `json_to_recordset` turns the array into typed rows (`json`, not `jsonb`: it
/// is read once, and the text is not parsed into a tree first).
const POSTGRES: Statements = Statements {
    calls: concat!(
        "INSERT INTO hook_calls (",
        call_columns!(),
        ") SELECT r.request_id, r.received_at, r.hook, r.hook_instance, r.service_id, r.client_iss, \
         r.client_sub, r.client_tenant, r.client_jti_sha256, r.patient_id, r.encounter_id, \
         r.fhir_server_host, \
         CASE json_typeof(r.response_body) WHEN 'string' THEN r.response_body #>> '{}' \
         ELSE r.response_body::text END, r.request_body \
         FROM json_to_recordset($1::json) AS r(request_id text, received_at text, hook text, \
         hook_instance text, service_id text, client_iss text, client_sub text, \
         client_tenant text, client_jti_sha256 text, patient_id text, encounter_id text, \
         fhir_server_host text, response_body json, request_body text) \
         ON CONFLICT (request_id) DO NOTHING"
    ),
    determinations: concat!(
        "INSERT INTO determinations (",
        determination_insert_columns!(),
        ") SELECT r.request_id, r.position, r.decided_at, r.patient_id, r.order_ref, \
         r.billing_code, r.covered, r.criteria, r.policy_id, r.policy_version, \
         r.policy_effective, r.assertion_id, r.card_uuid, r.card_summary \
         FROM json_to_recordset($1::json) AS r(request_id text, position integer, \
         decided_at text, patient_id text, order_ref text, billing_code text, covered text, \
         criteria text, policy_id text, policy_version text, policy_effective text, \
         assertion_id text, card_uuid text, card_summary text) \
         ON CONFLICT (request_id, position) DO NOTHING"
    ),
    feedback: "INSERT INTO feedback (id, received_at, request_id, service_id, card_uuid, \
         assertion_id, outcome, override_reason, accepted_suggestions, has_comment, \
         outcome_timestamp, client_iss) \
         SELECT r.id, r.received_at, r.request_id, r.service_id, r.card_uuid, \
         (SELECT MAX(d.assertion_id) FROM determinations d WHERE d.card_uuid = r.card_uuid), \
         r.outcome, r.override_reason, r.accepted_suggestions, r.has_comment, \
         r.outcome_timestamp, r.client_iss \
         FROM json_to_recordset($1::json) AS r(id text, received_at text, request_id text, \
         service_id text, card_uuid text, outcome text, override_reason text, \
         accepted_suggestions bigint, has_comment bigint, outcome_timestamp text, \
         client_iss text) \
         ON CONFLICT (id) DO NOTHING",
};

/// PostgreSQL's bulk load of calls and of determinations: rows in the binary copy format.
///
/// Why not the JSON array statements ([`POSTGRES`]): the server then parses each row's JSON
/// object, response body included, to pull out its columns, and checks each row against the
/// primary key before inserting it (`ON CONFLICT`). Measured on PostgreSQL 15 with 50,000
/// no-IORT call rows in batches of 500 (BENCHMARKS.md, session 8), that took about three
/// times the server's CPU of a binary `COPY` of the same rows. `COPY` has no `ON CONFLICT`:
/// a batch meeting a row already there fails whole, and is then written again through the JSON
/// statements, which skip such rows.
const COPY_CALLS: &str = concat!(
    "COPY hook_calls (",
    call_columns!(),
    ") FROM STDIN (FORMAT binary)"
);
const COPY_DETERMINATIONS: &str = concat!(
    "COPY determinations (",
    determination_insert_columns!(),
    ") FROM STDIN (FORMAT binary)"
);

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// One column's value in a row written by `COPY` or bound in a SQLite insert.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field<'a> {
    Text(Option<&'a str>),
    Int(i32),
}

/// Rows in PostgreSQL's binary copy format: the signature, flags and header extension, then
/// per row its field count and each field as a 32-bit length (-1: NULL) and its bytes (a text
/// value's UTF-8 bytes, an `integer` as 4 bytes, big-endian), then a field count of -1. Nothing
/// is escaped and nothing is parsed: the server copies each value as it came.
struct CopyRows(Vec<u8>);

impl CopyRows {
    const SIGNATURE: &'static [u8] = b"PGCOPY\n\xff\r\n\0";

    fn of<const N: usize, T>(
        rows: &[T],
        fields: impl Fn(&T) -> [Field<'_>; N],
    ) -> Result<Vec<u8>, sqlx::Error> {
        let size: usize = rows
            .iter()
            .map(|r| {
                2 + fields(r)
                    .iter()
                    .map(|f| match f {
                        Field::Text(t) => 4 + t.map_or(0, str::len),
                        Field::Int(_) => 8,
                    })
                    .sum::<usize>()
            })
            .sum();
        let mut out = CopyRows(Vec::with_capacity(Self::SIGNATURE.len() + 8 + size + 2));
        out.0.extend_from_slice(Self::SIGNATURE);
        out.0.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        out.0.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        for row in rows {
            out.row(&fields(row))?;
        }
        out.0.extend_from_slice(&(-1i16).to_be_bytes());
        Ok(out.0)
    }

    fn row(&mut self, fields: &[Field<'_>]) -> Result<(), sqlx::Error> {
        let count = i16::try_from(fields.len()).map_err(too_long)?;
        self.0.extend_from_slice(&count.to_be_bytes());
        for field in fields {
            match field {
                Field::Text(None) => self.0.extend_from_slice(&(-1i32).to_be_bytes()),
                Field::Text(Some(t)) => {
                    let len = i32::try_from(t.len()).map_err(too_long)?;
                    self.0.extend_from_slice(&len.to_be_bytes());
                    self.0.extend_from_slice(t.as_bytes());
                }
                Field::Int(i) => {
                    self.0.extend_from_slice(&4i32.to_be_bytes());
                    self.0.extend_from_slice(&i.to_be_bytes());
                }
            }
        }
        Ok(())
    }
}

fn too_long(e: std::num::TryFromIntError) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(e))
}

#[derive(Serialize)]
struct CallRow<'a> {
    request_id: &'a str,
    received_at: &'a str,
    hook: &'a str,
    hook_instance: &'a str,
    service_id: &'a str,
    client_iss: Option<&'a str>,
    client_sub: Option<&'a str>,
    client_tenant: Option<&'a str>,
    client_jti_sha256: Option<&'a str>,
    patient_id: &'a str,
    encounter_id: Option<&'a str>,
    fhir_server_host: Option<&'a str>,
    response_body: Body<'a>,
    request_body: Option<&'a str>,
}

/// A call's response body in a PostgreSQL batch: the JSON it is, written into the array as
/// it is (a JSON object, not a string), which `json_to_recordset` hands over as its text
/// (a `json` column) without unescaping a 7 KB string; a body that is not JSON (never
/// produced, but possible in a hand-made record) goes as a string and is read back as one.
#[derive(Clone, Copy)]
struct Body<'a>(&'a str);

impl Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(self.0) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_str(self.0),
        }
    }
}

#[derive(Serialize)]
struct DeterminationRow<'a> {
    request_id: &'a str,
    position: usize,
    decided_at: &'a str,
    patient_id: &'a str,
    order_ref: Option<&'a str>,
    billing_code: Option<&'a str>,
    covered: &'a str,
    /// The criteria's JSON as text (stored as such).
    criteria: &'a str,
    policy_id: &'a str,
    policy_version: &'a str,
    policy_effective: &'a str,
    assertion_id: Option<&'a str>,
    card_uuid: Option<&'a str>,
    card_summary: Option<&'a str>,
}

#[derive(Serialize)]
struct FeedbackRow<'a> {
    id: &'a str,
    received_at: &'a str,
    request_id: &'a str,
    service_id: &'a str,
    card_uuid: &'a str,
    outcome: &'a str,
    override_reason: Option<&'a str>,
    accepted_suggestions: i64,
    has_comment: i64,
    outcome_timestamp: &'a str,
    client_iss: Option<&'a str>,
}

impl CallRow<'_> {
    /// The values, in [`call_columns`]' order.
    fn fields(&self) -> [Field<'_>; 14] {
        use Field::Text;
        [
            Text(Some(self.request_id)),
            Text(Some(self.received_at)),
            Text(Some(self.hook)),
            Text(Some(self.hook_instance)),
            Text(Some(self.service_id)),
            Text(self.client_iss),
            Text(self.client_sub),
            Text(self.client_tenant),
            Text(self.client_jti_sha256),
            Text(Some(self.patient_id)),
            Text(self.encounter_id),
            Text(self.fhir_server_host),
            Text(Some(self.response_body.0)),
            Text(self.request_body),
        ]
    }
}

impl DeterminationRow<'_> {
    /// The values, in [`determination_insert_columns`]' order.
    fn fields(&self) -> [Field<'_>; 14] {
        use Field::Text;
        [
            Text(Some(self.request_id)),
            // A call's orders are bounded far below this by the request limits.
            Field::Int(i32::try_from(self.position).unwrap_or(i32::MAX)),
            Text(Some(self.decided_at)),
            Text(Some(self.patient_id)),
            Text(self.order_ref),
            Text(self.billing_code),
            Text(Some(self.covered)),
            Text(Some(self.criteria)),
            Text(Some(self.policy_id)),
            Text(Some(self.policy_version)),
            Text(Some(self.policy_effective)),
            Text(self.assertion_id),
            Text(self.card_uuid),
            Text(self.card_summary),
        ]
    }
}

/// A batch's rows, per table.
struct Rows<'a> {
    calls: Vec<CallRow<'a>>,
    determinations: Vec<DeterminationRow<'a>>,
    feedback: Vec<FeedbackRow<'a>>,
}

/// The rows as one JSON array (`None`: no rows).
fn json_array<T: Serialize>(rows: &[T]) -> Result<Option<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(rows)
        .map(Some)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

impl<'a> Rows<'a> {
    fn of(items: &'a [Item]) -> Self {
        let mut calls = Vec::with_capacity(items.len());
        let mut determinations = Vec::new();
        let mut feedback = Vec::new();
        for item in items {
            match item {
                Item::Call(c) => {
                    calls.push(call_row(c));
                    determinations.extend(determination_rows(c));
                }
                Item::Feedback(f) => feedback.push(feedback_row(f)),
                Item::Close(_) => {}
            }
        }
        Self {
            calls,
            determinations,
            feedback,
        }
    }
}

fn call_row(c: &CallRecord) -> CallRow<'_> {
    CallRow {
        request_id: &c.request_id,
        received_at: &c.received_at,
        hook: &c.header.hook,
        hook_instance: &c.header.hook_instance,
        service_id: &c.service_id,
        client_iss: c.client.iss.as_deref(),
        client_sub: c.client.sub.as_deref(),
        client_tenant: c.client.tenant.as_deref(),
        client_jti_sha256: c.client.jti_sha256.as_deref(),
        patient_id: &c.header.patient_id,
        encounter_id: c.header.encounter_id.as_deref(),
        fhir_server_host: c.header.fhir_server_host.as_deref(),
        response_body: Body(&c.response_body),
        request_body: c.request_body.as_deref(),
    }
}

fn determination_rows(c: &CallRecord) -> impl Iterator<Item = DeterminationRow<'_>> {
    c.orders.iter().enumerate().map(|(i, o)| DeterminationRow {
        request_id: &c.request_id,
        position: i,
        decided_at: &c.received_at,
        patient_id: &c.header.patient_id,
        order_ref: o.order_ref.as_deref(),
        billing_code: o.billing_code.as_deref(),
        covered: o.covered,
        criteria: &o.criteria,
        policy_id: &o.policy_id,
        policy_version: &o.policy_version,
        policy_effective: &o.policy_effective,
        assertion_id: o.assertion_id.as_deref(),
        card_uuid: o.card_uuid.as_deref(),
        card_summary: o.card_summary.as_deref(),
    })
}

fn feedback_row(f: &FeedbackRecord) -> FeedbackRow<'_> {
    FeedbackRow {
        id: &f.id,
        received_at: &f.received_at,
        request_id: &f.request_id,
        service_id: &f.service_id,
        card_uuid: &f.card_uuid,
        outcome: &f.outcome,
        override_reason: f.override_reason.as_deref(),
        accepted_suggestions: f.accepted_suggestions,
        has_comment: i64::from(f.has_comment),
        outcome_timestamp: &f.outcome_timestamp,
        client_iss: f.client_iss.as_deref(),
    }
}

/// One statement of a batch.
enum Statement<'r, 'a> {
    /// Fixed text reading its rows from one JSON array parameter.
    Json(&'static str, String),
    /// SQLite: rows bound as parameters (see [`Insert`]).
    Calls(&'r [CallRow<'a>]),
    Determinations(&'r [DeterminationRow<'a>]),
}

impl Statement<'_, '_> {
    async fn execute<'e, E>(&self, executor: E) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        match self {
            Statement::Json(sql, rows) => sqlx::query(sql)
                .bind(rows.as_str())
                .execute(executor)
                .await
                .map(drop),
            Statement::Calls(rows) => {
                sqlite_insert(&SQLITE_CALLS, rows, CallRow::fields, executor).await
            }
            Statement::Determinations(rows) => {
                sqlite_insert(
                    &SQLITE_DETERMINATIONS,
                    rows,
                    DeterminationRow::fields,
                    executor,
                )
                .await
            }
        }
    }
}

/// SQLite: one `INSERT` of `rows`, each row's fields bound as parameters.
async fn sqlite_insert<'e, const N: usize, T, E>(
    insert: &Insert,
    rows: &[T],
    fields: impl Fn(&T) -> [Field<'_>; N],
    executor: E,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = QueryBuilder::<Any>::new(insert.head);
    q.push_values(rows.iter(), |mut b, r| {
        for field in fields(r) {
            match field {
                Field::Text(t) => b.push_bind(t),
                Field::Int(i) => b.push_bind(i64::from(i)),
            };
        }
    });
    q.push(insert.tail);
    q.build().execute(executor).await.map(drop)
}

/// Where the writer writes.
pub(crate) enum Sink {
    /// SQLite, through the store's pool.
    Sqlite(AnyPool),
    /// PostgreSQL, through a pool of its own: `COPY` is PostgreSQL's own protocol, which
    /// sqlx's `Any` connections do not offer.
    Postgres(PgPool),
}

/// Write a batch: calls, then their determinations, then feedback (which looks up the
/// determinations' assertions), in one transaction. A batch of one statement (the common
/// case: calls without an IORT order) is atomic by itself, and runs without `BEGIN`/`COMMIT`
/// (two round trips fewer).
pub(crate) async fn write_batch(sink: &Sink, items: &[Item]) -> Result<(), sqlx::Error> {
    let rows = Rows::of(items);
    match sink {
        Sink::Sqlite(pool) => write_sqlite(pool, &rows).await,
        Sink::Postgres(pool) => write_postgres(pool, &rows).await,
    }
}

/// SQLite: a few statements per table ([`sqlite_chunks`]).
async fn write_sqlite(pool: &AnyPool, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    let mut statements = Vec::new();
    statements.extend(sqlite_chunks(&rows.calls).map(Statement::Calls));
    statements.extend(sqlite_chunks(&rows.determinations).map(Statement::Determinations));
    if let Some(json) = json_array(&rows.feedback)? {
        statements.push(Statement::Json(SQLITE_FEEDBACK, json));
    }
    match statements.as_slice() {
        [] => Ok(()),
        [one] => one.execute(pool).await,
        _ => {
            let mut tx = pool.begin().await?;
            for statement in &statements {
                statement.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    }
}

/// PostgreSQL: calls and determinations by `COPY`, feedback by its JSON statement. A batch
/// that meets a row already there (written before, its commit's answer lost; or the same record
/// twice in one batch) is rolled back and written again through the JSON statements, which skip
/// such rows.
async fn write_postgres(pool: &PgPool, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    match copy_postgres(&mut conn, rows).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            insert_postgres(&mut conn, rows).await
        }
        written => written,
    }
}

async fn copy_postgres(conn: &mut PgConnection, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    let calls = (!rows.calls.is_empty())
        .then(|| CopyRows::of(&rows.calls, CallRow::fields))
        .transpose()?;
    let determinations = (!rows.determinations.is_empty())
        .then(|| CopyRows::of(&rows.determinations, DeterminationRow::fields))
        .transpose()?;
    let feedback = json_array(&rows.feedback)?;
    if let (Some(calls), None, None) = (&calls, &determinations, &feedback) {
        return copy_in(conn, COPY_CALLS, calls).await;
    }
    let mut tx = conn.begin().await?;
    if let Some(calls) = &calls {
        copy_in(&mut tx, COPY_CALLS, calls).await?;
    }
    if let Some(determinations) = &determinations {
        copy_in(&mut tx, COPY_DETERMINATIONS, determinations).await?;
    }
    if let Some(feedback) = feedback {
        sqlx::query(POSTGRES.feedback)
            .bind(feedback)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// One `COPY ... FROM STDIN` of `data` (binary format, from [`CopyRows`]).
async fn copy_in(conn: &mut PgConnection, statement: &str, data: &[u8]) -> Result<(), sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await.map(drop)
}

/// The batch through the JSON statements ([`POSTGRES`]), which skip rows already there.
async fn insert_postgres(conn: &mut PgConnection, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    let mut statements = Vec::new();
    for (sql, json) in [
        (POSTGRES.calls, json_array(&rows.calls)?),
        (POSTGRES.determinations, json_array(&rows.determinations)?),
        (POSTGRES.feedback, json_array(&rows.feedback)?),
    ] {
        if let Some(json) = json {
            statements.push((sql, json));
        }
    }
    let mut tx = conn.begin().await?;
    for (sql, json) in statements {
        sqlx::query(sql).bind(json).execute(&mut *tx).await?;
    }
    tx.commit().await
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

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_statements_take_few_sizes_and_every_row_once() {
        let sizes = |n: usize| {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = super::sqlite_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "{n} rows, in order, once");
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(100), [64, 32, 4]);
        assert_eq!(sizes(300), [128, 128, 32, 8, 4]);
        let mut seen = std::collections::HashSet::new();
        for n in 0..=2_000 {
            seen.extend(sizes(n));
        }
        assert_eq!(seen.len(), 8, "{seen:?}");
    }
}
