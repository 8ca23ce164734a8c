//! `check`'s look at the host: what `run` would fail on although the configuration is valid. The
//! socket's directory and group, and a state directory whose files the daemon's user cannot
//! read and write (a run as root by hand leaves root's files behind: the packaged daemon would
//! then answer nothing). Under systemd, `ExecStartPre=helpdesk-milter check` runs as the daemon's
//! user and under its system-call filter, so these checks see what the daemon will see. A shared
//! store's URL and password file are checked too, but never the server: a start must not fail
//! while the database is down, since mail would then pass untriaged.

use crate::config::{Backend, Config, Listen};
use crate::diagnostic::{Diagnostic, Diagnostics};
use nix::unistd::{AccessFlags, Gid, Uid, access};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Every problem found, each naming the setting and what to do.
pub fn check_host(config: &Config) -> Result<(), Diagnostics> {
    let mut problems = Vec::new();
    if let Listen::Unix(path) = &config.milter.listen {
        problems.extend(socket(path, config.milter.socket_group.as_deref()).err());
    }
    problems.extend(state_directory(&config.state.directory));
    if let Backend::Postgres { url, password_file } = &config.state.backend {
        problems.extend(crate::store::postgres::check_url(url).err());
        problems.extend(password_file.as_deref().and_then(|p| self::password_file(p).err()));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let user = nix::unistd::User::from_uid(Uid::effective())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", Uid::effective()), |u| u.name);
    Err(Diagnostics(
        problems
            .into_iter()
            .map(|p| Diagnostic::whole_file(&config.path, format!("{p} (checked as {user})")))
            .collect(),
    ))
}

/// The socket's directory must let us create the socket, and a `socket_group` other than ours
/// must be one we may give it: tried on a scratch file there, as `run` does on the socket.
fn socket(path: &Path, group: Option<&str>) -> Result<(), String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "milter.listen: the directory {} of the socket does not exist; create it (under systemd, RuntimeDirectory= does)",
            dir.display()
        ));
    }
    if access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        return Err(format!(
            "milter.listen: cannot create the socket in {}: no write permission there",
            dir.display()
        ));
    }
    let Some(group) = group else { return Ok(()) };
    let gid = match group.parse::<u32>() {
        Ok(g) => Gid::from_raw(g),
        Err(_) => match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => g.gid,
            _ => return Err(format!("milter.socket_group: there is no group named {group:?}")),
        },
    };
    if gid == Gid::effective() {
        return Ok(());
    }
    let probe = dir.join(format!(".helpdesk-milter-check-{}", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|f| std::os::unix::fs::fchown(&f, None, Some(gid.as_raw())));
    let _ = std::fs::remove_file(&probe);
    result.map_err(|e| {
        format!(
            "milter.socket_group: the daemon cannot give its socket to group {group} ({e}); leave socket_group empty, so that the socket keeps the daemon's group, and make Postfix a member of that group (README, \"Users, groups and the socket\")"
        )
    })
}

/// The state directory and everything in it must be the daemon's to read and write; a directory
/// that does not exist yet must be one the daemon can create.
fn state_directory(dir: &Path) -> Vec<String> {
    let fix = format!("chown -R USER: {}", dir.display());
    match std::fs::symlink_metadata(dir) {
        Err(_) => {
            let parent = dir.ancestors().skip(1).find(|a| a.exists()).unwrap_or(Path::new("/"));
            if access(parent, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
                return vec![format!(
                    "state.directory: {} does not exist and cannot be created in {}; create it, owned by the daemon's user, mode 0700",
                    dir.display(),
                    parent.display()
                )];
            }
            Vec::new()
        }
        Ok(m) if !m.is_dir() => vec![format!("state.directory: {} is not a directory", dir.display())],
        Ok(m) => {
            let mut problems = Vec::new();
            for (path, meta) in std::iter::once((dir.to_path_buf(), m.clone())).chain(entries(dir)) {
                if let Some(p) = unusable(&path, &meta, m.uid()) {
                    problems
                        .push(format!("state.directory: {p}; give the state to the daemon's user: {fix}"));
                }
            }
            problems
        }
    }
}

/// What keeps the daemon from using one entry of its state directory, if anything.
fn unusable(path: &Path, meta: &std::fs::Metadata, dir_owner: u32) -> Option<String> {
    let mut want = AccessFlags::R_OK | AccessFlags::W_OK;
    if meta.is_dir() {
        want |= AccessFlags::X_OK;
    }
    if access(path, want).is_err() {
        return Some(format!("{} cannot be read and written", path.display()));
    }
    // root can read and write anything: look at the owner instead, which is what the daemon's
    // user would meet.
    if Uid::effective().is_root() && meta.uid() != dir_owner {
        return Some(format!(
            "{} belongs to uid {} but the directory to uid {dir_owner}: the daemon's user cannot use it",
            path.display(),
            meta.uid()
        ));
    }
    None
}

/// The password file of a shared store: there, readable by the user running `check` (the
/// daemon's user under systemd), and by no one else.
fn password_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let fix = format!(
        "put the password alone in it, readable by the daemon's user only: chown helpdesk-milter: {0}; chmod 0600 {0}",
        path.display()
    );
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("state.password_file: {}: {e}; {fix}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("state.password_file: {} is not a file; {fix}", path.display()));
    }
    if access(path, AccessFlags::R_OK).is_err() {
        return Err(format!("state.password_file: {} cannot be read; {fix}", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "state.password_file: {} is readable by others than its owner (mode {mode:04o}); {fix}",
            path.display()
        ));
    }
    Ok(())
}

/// Every entry below `dir`, symlinks not followed.
fn entries(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let Ok(reader) = std::fs::read_dir(dir) else { return out };
    for e in reader.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        // The daemon never makes a link, and opens none but its own files: any other link is
        // someone else's business (the postinst leaves links and what they point to alone too).
        if meta.file_type().is_symlink() && !is_daemon_file(&e.file_name()) {
            continue;
        }
        if meta.is_dir() {
            out.extend(entries(&e.path()));
        }
        out.push((e.path(), meta));
    }
    out
}

/// Whether a name in the state directory is one the daemon opens.
fn is_daemon_file(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name == crate::store::keys::SECRET_FILE
        || name == "outbox"
        || name
            .strip_prefix(crate::store::sqlite::STORE_FILE)
            .is_some_and(|rest| ["", "-wal", "-shm"].contains(&rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_are_looked_at_only_when_the_daemon_opens_them() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nonexistent/elsewhere", dir.path().join("link-out")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/secret", dir.path().join("secret")).unwrap();
        let names: Vec<String> = entries(dir.path())
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["secret"], "only the daemon's own file is checked");
        // And that one is refused: the daemon could not open it.
        let problems = state_directory(dir.path());
        assert!(problems.iter().any(|p| p.contains("secret")), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("link-out")), "{problems:?}");
    }

    #[test]
    fn a_state_directory_that_can_be_used_or_created_passes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(state_directory(&dir.path().join("new/state")).is_empty());
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        assert!(state_directory(dir.path()).is_empty());
    }

    #[test]
    fn a_file_of_another_user_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.redb");
        std::fs::write(&file, b"x").unwrap();
        if Uid::effective().is_root() {
            // As root, a file owned by another user than the directory's owner.
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        } else {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        let problems = state_directory(dir.path());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("state.redb") && problems[0].contains("chown -R"), "{problems:?}");
    }

    #[test]
    fn the_password_file_must_be_there_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-password");
        assert!(password_file(&file).unwrap_err().contains("No such file"));
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = password_file(&file).unwrap_err();
        assert!(e.contains("readable by others") && e.contains("chmod 0600"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password_file(&file), Ok(()));
        assert!(password_file(dir.path()).unwrap_err().contains("not a file"));
    }

    #[test]
    fn a_socket_group_we_may_not_give_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        assert!(socket(&path, None).is_ok());
        assert!(
            socket(&dir.path().join("missing/milter.sock"), None).unwrap_err().contains("does not exist")
        );
        assert!(socket(&path, Some("no-such-group-here")).unwrap_err().contains("no group named"));
        assert!(socket(&path, Some(&Gid::effective().to_string())).is_ok(), "our own group needs no chown");
        if !Uid::effective().is_root() {
            // A group we are not a member of: chown is refused, as it is to the daemon.
            let e = socket(&path, Some("0")).unwrap_err();
            assert!(e.contains("cannot give its socket to group 0"), "{e}");
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the probe is removed");
    }
}
