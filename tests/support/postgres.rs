//! A private, throw-away **PostgreSQL server on loopback** for the tests of the shared store.
//!
//! `initdb` in a temporary directory (as the user `postgres`, which Debian's package creates:
//! initdb refuses root), started with `pg_ctl` on a free loopback port, its UNIX socket in that
//! directory too: the system's cluster is never touched. The daemon's role `helpdesk` logs in
//! with a password (SCRAM) over TCP, from a password file of mode 0600; the tests look at the
//! tables as the superuser over the socket. Stopped and removed at drop.
//!
//! Missing binaries are a failure that names the package, not a skip.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HINT: &str = "install PostgreSQL: run .ci/run (tests/run installs it), or apt-get install postgresql";
pub const ROLE: &str = "helpdesk";
const PASSWORD: &str = "test-password-of-the-shared-store";

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    paused: bool,
}

/// The newest PostgreSQL installed: /usr/lib/postgresql/VERSION/bin.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| panic!("no /usr/lib/postgresql/*/bin/initdb: {HINT}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}; {HINT}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// A new server, running, with the role and database `helpdesk` for the daemon.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("hm-pg-").tempdir().unwrap();
        let pg = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no user postgres: {HINT}"));
        std::os::unix::fs::chown(dir.path(), Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
        let mut db = Postgres { dir, port: free_port(), bin, paused: false };
        run(db.as_postgres("initdb").args(["-D"]).arg(db.data()).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        ]));
        db.start_again();
        db.psql_in("postgres", &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"));
        db.psql_in("postgres", &format!("CREATE DATABASE {ROLE} OWNER {ROLE}"));
        let pw = db.password_file();
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        db
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, tool: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
        c
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("db-password")
    }

    pub fn url(&self) -> String {
        format!("postgresql://{ROLE}@127.0.0.1:{}/{ROLE}?sslmode=disable", self.port)
    }

    /// The `[state]` lines of a daemon that uses this server.
    pub fn state_toml(&self, timeout: &str) -> String {
        format!(
            "backend = \"{}\"\npassword_file = \"{}\"\ntimeout = \"{timeout}\"\n",
            self.url(),
            self.password_file().display()
        )
    }

    /// Starts the server (again, after `kill`), and waits until it takes connections.
    pub fn start_again(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        run(self
            .as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "start"]));
    }

    /// The superuser's query over the socket; rows one a line, columns separated by `|`.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(ROLE, sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        run(Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", database, "-c", sql]))
    }

    /// Every row of every table of the daemon's database, as text (bytes in hex).
    pub fn dump_all(&self) -> String {
        let tables = self.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        let mut out = String::new();
        for t in tables.lines().filter(|t| !t.is_empty()) {
            out.push_str(&format!("== {t}\n"));
            out.push_str(&self.psql(&format!("SELECT * FROM {t}")));
        }
        out
    }

    /// The server's processes: the postmaster and its children.
    fn pids(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(self.data().join("postmaster.pid")) else { return Vec::new() };
        let Some(main) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
            return Vec::new();
        };
        let mut pids = vec![main];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            // The field after the command's closing parenthesis: state, then the parent.
            let ppid =
                stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal(&self, pids: &[i32], sig: &str) {
        if !pids.is_empty() {
            let _ = Command::new("kill").args(["-s", sig]).args(pids.iter().map(i32::to_string)).output();
        }
    }

    /// Kills the server outright (SIGKILL to every process of it), as a crash would.
    pub fn kill(&mut self) {
        let pids = self.pids();
        self.signal(&pids, "KILL");
        let t0 = Instant::now();
        while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
            assert!(t0.elapsed() < Duration::from_secs(20), "the server's processes outlive SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.paused = false;
    }

    /// Freezes every process of the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&mut self) {
        self.signal(&self.pids(), "STOP");
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal(&self.pids(), "CONT");
        self.paused = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let pids = self.pids();
        self.signal(&pids, "KILL");
    }
}
