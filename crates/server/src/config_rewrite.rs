//! CONFIG REWRITE: the running configuration written back into the TOML file the
//! server was started with, as Redis rewrites its redis.conf.
//!
//! What it writes, in Redis's spirit: every Redis parameter whose value differs
//! from Tidewire's default goes into `[redis]`; a parameter the file already names
//! (under `[redis]`, in any case, old alias names included) gets its current
//! value even when that is the default; `requirepass` and `dir` update the
//! file's top-level `requirepass` / `data_dir` where they live; ACL users (unless
//! an `aclfile` keeps them) become `[redis] user = [...]`. The listeners (`port`,
//! `bind`) stay as the file has them: they are bound at start. Everything else
//! in the file — comments, order, the other sections — is kept (`toml_edit`).
//! The new text replaces the file atomically (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use tidewire_store::Store;
use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// Parameters kept at the top level of Tidewire's file, by their key there.
const TOP_LEVEL: &[(&str, &str)] = &[("requirepass", "requirepass"), ("dir", "data_dir")];

/// Parameters never written: the listeners are bound at start from the file's
/// own top-level keys (and `port` reports the port actually bound).
const NOT_WRITTEN: &[&str] = &["port", "bind"];

/// Installs the CONFIG REWRITE hook for a server started from `path`. `defaults`
/// are the parameters as Tidewire starts without any configuration.
pub fn install(store: &Arc<Store>, path: PathBuf, defaults: Vec<(&'static str, String)>) {
    let weak: Weak<Store> = Arc::downgrade(store);
    let defaults: BTreeMap<&'static str, String> = defaults.into_iter().collect();
    store.hooks.lock().config_rewrite = Some(Box::new(move |force_all| {
        let store = weak.upgrade().ok_or("the server is stopping")?;
        rewrite_file(&store, &path, &defaults, force_all)
    }));
}

fn rewrite_file(
    store: &Store,
    path: &Path,
    defaults: &BTreeMap<&'static str, String>,
    force_all: bool,
) -> Result<(), String> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // Redis recreates a config file that went away.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.to_string()),
    };
    let current = store.config.rewritable();
    let users = tidewire_store::families::acl::user_directives(store);
    let text = rewritten(&old, &current, defaults, users, force_all)?;
    replace_file(path, text.as_bytes()).map_err(|e| e.to_string())
}

/// The file's new text (see the module docs).
pub fn rewritten(
    old: &str,
    current: &[(&'static str, String)],
    defaults: &BTreeMap<&'static str, String>,
    users: Option<Vec<String>>,
    force_all: bool,
) -> Result<String, String> {
    let mut doc: DocumentMut = old.parse().map_err(|e| format!("cannot parse {e}"))?;
    let mut redis = take_redis_table(&mut doc)?;
    // Keys the file already has under [redis], each set to the value of what it names.
    let named: Vec<String> = redis.iter().map(|(k, _)| k.to_string()).collect();
    let mut written: Vec<&str> = Vec::new();
    for key in &named {
        let lower = key.to_ascii_lowercase();
        let canonical = tidewire_store::config::canonical_name(&lower);
        if let Some((name, value)) = current.iter().find(|(n, _)| *n == canonical) {
            set_value(&mut redis, key, value);
            written.push(name);
        }
    }
    let mut top_level = Vec::new();
    for (name, value) in current {
        if written.contains(name) || NOT_WRITTEN.contains(name) {
            continue;
        }
        let differs = defaults.get(name).map(String::as_str) != Some(value.as_str());
        if let Some((_, top)) = TOP_LEVEL.iter().find(|(n, _)| n == name) {
            if differs || force_all || doc.contains_key(top) {
                top_level.push((*top, value.as_str()));
            }
            continue;
        }
        if differs || force_all {
            set_value(&mut redis, name, value);
        }
    }
    for (key, value) in top_level {
        if key == "requirepass" && value.is_empty() {
            doc.remove(key);
        } else {
            set_value(doc.as_table_mut(), key, value);
        }
    }
    if let Some(users) = users {
        let pristine = users.len() == 1 && users[0].starts_with("default on nopass ");
        if !pristine || force_all || redis.contains_key("user") {
            let mut list = Array::new();
            for u in users {
                list.push(u);
            }
            redis.insert("user", Item::Value(Value::Array(list)));
        }
    }
    if !redis.is_empty() {
        doc.insert("redis", Item::Table(redis));
    }
    Ok(doc.to_string())
}

/// The `[redis]` table taken out of the document (its position stays with it, so
/// it goes back where it was), or a new one.
fn take_redis_table(doc: &mut DocumentMut) -> Result<Table, String> {
    match doc.remove("redis") {
        None => {
            let mut t = Table::new();
            t.set_implicit(false);
            Ok(t)
        }
        Some(Item::Table(t)) => Ok(t),
        // An inline `redis = { … }` becomes a section, so keys can be added.
        Some(Item::Value(Value::InlineTable(t))) => Ok(t.into_table()),
        Some(_) => Err("`redis` in the config file is not a table".into()),
    }
}

/// Sets `key` to `value`, keeping the file's type for it where the value fits it
/// (TOML booleans for yes/no, integers), and the key's formatting.
fn set_value(table: &mut Table, key: &str, value: &str) {
    let new = match table.get(key).and_then(Item::as_value) {
        Some(Value::Boolean(_)) if value == "yes" || value == "no" => Value::from(value == "yes"),
        Some(Value::Integer(_)) => match value.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(value),
        },
        _ => Value::from(value),
    };
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            let decor = old.decor().clone();
            *old = new;
            *old.decor_mut() = decor;
        }
        _ => {
            table.insert(key, Item::Value(new));
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.rewrite-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> BTreeMap<&'static str, String> {
        [
            ("maxmemory", "0"),
            ("appendonly", "yes"),
            ("save", "3600 1 300 100 60 10000"),
            ("requirepass", ""),
            ("dir", "./data"),
            ("port", "6379"),
            ("hash-max-listpack-entries", "128"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    }

    fn current(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut all = defaults();
        for (k, v) in pairs {
            all.insert(k, v.to_string());
        }
        all.into_iter().collect()
    }

    fn reparse(text: &str) -> toml::Value {
        toml::from_str(text).expect("the rewritten file parses")
    }

    #[test]
    fn writes_what_differs_and_keeps_the_rest_of_the_file() {
        let old = "# my server\nport = 7000 # the port\n\n[redis]\n# memory cap\nmaxmemory = \"1mb\"\nappendonly = true\n\n[realtime]\nhistory_retention_secs = 60\n";
        let text = rewritten(
            old,
            &current(&[
                ("maxmemory", "2097152"),
                ("appendonly", "no"),
                ("port", "7000"),
            ]),
            &defaults(),
            None,
            false,
        )
        .unwrap();
        assert!(
            text.starts_with("# my server\nport = 7000 # the port\n"),
            "{text}"
        );
        assert!(
            text.contains("# memory cap\nmaxmemory = \"2097152\""),
            "{text}"
        );
        assert!(text.find("[redis]") < text.find("[realtime]"), "{text}");
        let v = reparse(&text);
        assert_eq!(v["redis"]["appendonly"], toml::Value::Boolean(false));
        assert_eq!(
            v["realtime"]["history_retention_secs"],
            toml::Value::Integer(60)
        );
        // Defaults the file does not name stay out.
        assert!(v["redis"].get("save").is_none(), "{text}");
        assert!(v.get("data_dir").is_none(), "{text}");
    }

    #[test]
    fn adds_changed_parameters_top_level_settings_and_users() {
        let text = rewritten(
            "port = 0\n",
            &current(&[
                ("save", ""),
                ("requirepass", "s3cret"),
                ("dir", "/var/lib/tw"),
                ("port", "41234"),
            ]),
            &defaults(),
            Some(vec![
                "default on nopass ~* &* +@all".into(),
                "alice on #abc ~cache:* +get".into(),
            ]),
            false,
        )
        .unwrap();
        let v = reparse(&text);
        assert_eq!(
            v["port"],
            toml::Value::Integer(0),
            "the listener is the file's"
        );
        assert_eq!(v["requirepass"].as_str(), Some("s3cret"));
        assert_eq!(v["data_dir"].as_str(), Some("/var/lib/tw"));
        assert_eq!(v["redis"]["save"].as_str(), Some(""));
        let users = v["redis"]["user"].as_array().unwrap();
        assert_eq!(users[1].as_str(), Some("alice on #abc ~cache:* +get"));
    }

    #[test]
    fn alias_names_in_the_file_follow_their_parameter() {
        let text = rewritten(
            "[redis]\nhash-max-ziplist-entries = 21\n",
            &current(&[("hash-max-listpack-entries", "100")]),
            &defaults(),
            None,
            false,
        )
        .unwrap();
        let v = reparse(&text);
        assert_eq!(
            v["redis"]["hash-max-ziplist-entries"],
            toml::Value::Integer(100)
        );
        assert!(
            v["redis"].get("hash-max-listpack-entries").is_none(),
            "{text}"
        );
    }

    #[test]
    fn force_all_writes_defaults_and_nothing_at_all_drops_the_section() {
        let all = rewritten("", &current(&[]), &defaults(), None, true).unwrap();
        let v = reparse(&all);
        assert_eq!(v["redis"]["maxmemory"].as_str(), Some("0"));
        assert!(v["redis"].get("port").is_none());
        let none = rewritten("", &current(&[]), &defaults(), None, false).unwrap();
        assert_eq!(none.trim(), "");
        assert!(rewritten("redis = 3\n", &current(&[]), &defaults(), None, false).is_err());
    }
}
