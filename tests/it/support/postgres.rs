//! A throwaway PostgreSQL 15 cluster for one test: `initdb` in a temp dir, the server on a free
//! loopback port with trust authentication, stopped and deleted when dropped. As root, the
//! cluster runs as the `postgres` user (the server refuses to run as root).
//!
//! Without PostgreSQL 15 (`/usr/lib/postgresql/15/bin`, or `IORT_CDS_PG_BIN`) the PostgreSQL
//! tests are skipped with a line saying so, unless `CI` is `true` or `IORT_CDS_REQUIRE_PG` is
//! set (as `.ci/run` does): then a missing PostgreSQL fails them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("IORT_CDS_REQUIRE_PG").is_some()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Start a cluster, or `None` (after saying why) when PostgreSQL is not installed and the
    /// run does not require it. `test` names the test for the skip line.
    pub fn start(test: &str) -> Option<Self> {
        let bin = std::env::var_os("IORT_CDS_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        if !bin.join("initdb").exists() {
            let why = format!(
                "PostgreSQL 15 not found ({}/initdb; set IORT_CDS_PG_BIN)",
                bin.display()
            );
            assert!(
                !required(),
                "{test}: {why}; this run requires it (CI=true / IORT_CDS_REQUIRE_PG)"
            );
            // To the terminal, past the test harness's output capture (which takes stderr
            // writes too), so a plain `cargo test` shows what it skipped and why.
            let line = format!("{test}: SKIPPED: {why}\n");
            match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
                Ok(mut tty) => {
                    use std::io::Write as _;
                    let _ = tty.write_all(line.as_bytes());
                }
                Err(_) => eprint!("{line}"),
            }
            return None;
        }
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("iort-cds-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {} to postgres", dir.display());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        pg.start_server();
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Start (or start again) the server, waiting until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stop the server (fast: open connections are ended), waiting until it is down.
    pub fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
