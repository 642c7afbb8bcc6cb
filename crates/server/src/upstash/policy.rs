//! Which commands the REST API runs, decided from the command table's flags: no
//! blocking commands, no WATCH, no subscriptions or MONITOR (those have their SSE
//! endpoints), MULTI/EXEC only through `/multi-exec`; read-only tokens run only
//! commands flagged `readonly`, except KEYS and SCAN (whole-keyspace walks).

use tidewire_resp::Reply;
use tidewire_store::command::{flag, Command};
use tidewire_store::exec::resolve;

use super::auth::Access;

/// Commands a read-only token may run although they carry no `readonly` flag:
/// they touch no data.
const READONLY_EXTRA: &[&str] = &["ping", "echo", "time"];
/// Readonly-flagged commands read-only tokens may still not run.
const READONLY_DENIED: &[&str] = &["keys", "scan"];

/// Refuses what the REST API does not run for this token; `Ok` lets the command go
/// to the dispatcher (which also reports unknown commands and wrong arity).
pub fn check(argv: &[bytes::Bytes], access: Access) -> Result<(), Reply> {
    let Ok(cmd) = resolve(argv) else {
        // Never let a read-only token learn more than NOPERM about KEYS or SCAN.
        let name = String::from_utf8_lossy(argv.first().map_or(&[][..], |a| a)).to_lowercase();
        if access == Access::ReadOnly && READONLY_DENIED.contains(&name.as_str()) {
            return Err(no_perm(&name));
        }
        return Ok(());
    };
    refused(cmd)?;
    if access == Access::ReadOnly && !readonly_allowed(cmd) {
        return Err(no_perm(&cmd.full_name));
    }
    Ok(())
}

/// Upstash's text for a command the token may not run.
fn no_perm(name: &str) -> Reply {
    Reply::Error(format!(
        "NOPERM this user has no permissions to run the '{name}' command or its subcommand"
    ))
}

fn top_name(cmd: &Command) -> &str {
    cmd.full_name.split('|').next().unwrap_or("")
}

fn refused(cmd: &Command) -> Result<(), Reply> {
    let name = top_name(cmd);
    let msg = match name {
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
        | "sunsubscribe" | "monitor" => format!(
            "ERR {} is not supported over REST: use the Server-Sent Events endpoints (/subscribe/<channel>, /psubscribe/<pattern>, /monitor)",
            name.to_ascii_uppercase()
        ),
        "watch" | "unwatch" => format!(
            "ERR {} is not supported over REST",
            name.to_ascii_uppercase()
        ),
        "multi" | "exec" | "discard" => format!(
            "ERR {} is not supported here: send the transaction's commands to /multi-exec",
            name.to_ascii_uppercase()
        ),
        _ if cmd.has(flag::BLOCKING) && !cmd.has(flag::BLOCKS_ON_OPTION) => format!(
            "ERR blocking command {} is not supported over REST",
            name.to_ascii_uppercase()
        ),
        _ => return Ok(()),
    };
    Err(Reply::Error(msg))
}

fn readonly_allowed(cmd: &Command) -> bool {
    reads_only(cmd) && !READONLY_DENIED.contains(&top_name(cmd))
}

/// Whether a command only reads (flagged `readonly`, or PING/ECHO/TIME): what the
/// dashboard lets a read-only session run, SCAN and KEYS included since browsing
/// keys is the point there.
pub fn reads_only(cmd: &Command) -> bool {
    READONLY_EXTRA.contains(&top_name(cmd)) || cmd.has(flag::READONLY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn argv(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn err(r: Result<(), Reply>) -> String {
        match r {
            Err(Reply::Error(e)) => e,
            _ => String::new(),
        }
    }

    #[test]
    fn read_only_tokens() {
        let ro = Access::ReadOnly;
        assert!(check(&argv(&["GET", "k"]), ro).is_ok());
        assert!(check(&argv(&["ping"]), ro).is_ok());
        assert_eq!(
            err(check(&argv(&["SET", "k", "v"]), ro)),
            "NOPERM this user has no permissions to run the 'set' command or its subcommand"
        );
        assert!(err(check(&argv(&["KEYS", "*"]), ro)).starts_with("NOPERM"));
        assert!(err(check(&argv(&["SCAN", "0"]), ro)).starts_with("NOPERM"));
        assert!(check(&argv(&["SET", "k", "v"]), Access::ReadWrite).is_ok());
        // Unknown commands reach the dispatcher for Redis's own error.
        assert!(check(&argv(&["NOPE"]), ro).is_ok());
    }

    #[test]
    fn refused_everywhere() {
        let rw = Access::ReadWrite;
        assert!(err(check(&argv(&["WATCH", "k"]), rw)).contains("WATCH"));
        assert!(err(check(&argv(&["subscribe", "c"]), rw)).contains("SUBSCRIBE"));
        assert!(err(check(&argv(&["MULTI"]), rw)).contains("multi-exec"));
    }
}
