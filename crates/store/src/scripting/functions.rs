//! Redis Functions: libraries loaded with FUNCTION LOAD, the functions they
//! register, and the Lua states that run them (separate from EVAL's, as in Redis).
//!
//! The registry is copied on write: a load, delete or restore builds the new set of
//! libraries beside the current one and swaps it in only when every check passed,
//! so a failed FUNCTION LOAD REPLACE or RESTORE leaves the old libraries as they were.
//! Each swap is a new generation: a thread's Lua state (see `per_thread`) loads
//! the libraries of the current one again before its next FCALL.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::env::Registered;
use super::per_thread::{StatePool, ThreadState};
use super::{LuaEnv, ScriptFlags};
use crate::dump_payload;
use tidewire_resp::request::split_args;

/// How long FUNCTION LOAD may run a library's top-level code (Redis's
/// `LOAD_TIMEOUT_MS`); loading from disk or RESTORE has no limit.
pub const LOAD_TIMEOUT_MS: u64 = 500;

/// Flag names in the order Redis lists them (FUNCTION LIST).
const FLAG_ORDER: [&str; 5] = [
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// One registered function.
pub struct FunctionInfo {
    pub name: String,
    pub description: Option<Bytes>,
    pub flags: ScriptFlags,
    /// The library it belongs to.
    pub library: String,
}

impl FunctionInfo {
    /// Its flags by name, in Redis's order.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let f = self.flags;
        let set = [
            f.no_writes,
            f.allow_oom,
            f.allow_stale,
            f.no_cluster,
            f.allow_cross_slot_keys,
        ];
        FLAG_ORDER
            .iter()
            .zip(set)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect()
    }
}

/// A loaded library: its code as given (shebang included) and its functions in
/// registration order.
pub struct Library {
    pub name: String,
    pub code: Bytes,
    pub functions: Vec<Arc<FunctionInfo>>,
}

#[derive(Clone, Default)]
struct Registry {
    /// Which set of libraries this is (see the module's doc).
    generation: u64,
    libraries: BTreeMap<String, Arc<Library>>,
    /// Function names are case-insensitive (`FCALL TEST` calls `test`).
    functions: HashMap<String, Arc<FunctionInfo>>,
}

impl Registry {
    fn unlink(&mut self, name: &str) -> Option<Arc<Library>> {
        let lib = self.libraries.remove(name)?;
        for f in &lib.functions {
            self.functions.remove(&f.name.to_ascii_lowercase());
        }
        Some(lib)
    }

    /// Adds a library whose name is free; fails (changing nothing) on a function
    /// name another library has.
    fn link(&mut self, lib: Arc<Library>) -> Result<(), String> {
        if let Some(f) = lib
            .functions
            .iter()
            .find(|f| self.functions.contains_key(&f.name.to_ascii_lowercase()))
        {
            return Err(format!("Function {} already exists", f.name));
        }
        for f in &lib.functions {
            self.functions
                .insert(f.name.to_ascii_lowercase(), f.clone());
        }
        self.libraries.insert(lib.name.clone(), lib);
        Ok(())
    }
}

/// What FUNCTION RESTORE does with the libraries already loaded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RestorePolicy {
    Append,
    Replace,
    Flush,
}

pub struct Functions {
    registry: RwLock<Registry>,
    states: StatePool,
    /// The last generation given to a registry.
    generations: AtomicU64,
}

impl Default for Functions {
    fn default() -> Self {
        Functions {
            registry: RwLock::new(Registry::default()),
            states: StatePool::new(true),
            generations: AtomicU64::new(0),
        }
    }
}

/// Redis's name rule for libraries and functions.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The library's name and the code after its shebang line (from its line feed, so
/// line numbers stay the user's), as Redis's `functionExtractLibMetaData`.
fn metadata(code: &[u8]) -> Result<(String, &[u8]), String> {
    if !code.starts_with(b"#!") {
        return Err("Missing library metadata".into());
    }
    let Some(nl) = code.iter().position(|&b| b == b'\n') else {
        return Err("Invalid library metadata".into());
    };
    let parts = match split_args(&code[..nl]) {
        Some(p) if !p.is_empty() => p,
        _ => return Err("Invalid library metadata".into()),
    };
    let engine = &parts[0][2..];
    let mut name: Option<&[u8]> = None;
    for part in &parts[1..] {
        if part.len() >= 5 && part[..5].eq_ignore_ascii_case(b"name=") {
            if name.is_some() {
                return Err(
                    "Invalid metadata value, name argument was given multiple times".into(),
                );
            }
            name = Some(&part[5..]);
            continue;
        }
        return Err(format!(
            "Invalid metadata value given: {}",
            String::from_utf8_lossy(part)
        ));
    }
    let Some(name) = name else {
        return Err("Library name was not given".into());
    };
    if !valid_name(name) {
        return Err(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"
                .into(),
        );
    }
    if !engine.eq_ignore_ascii_case(b"lua") {
        return Err(format!(
            "Engine '{}' not found",
            String::from_utf8_lossy(engine)
        ));
    }
    // Checked above: ASCII letters, digits and '_'.
    let name = String::from_utf8_lossy(name).into_owned();
    Ok((name, &code[nl..]))
}

fn flags_from(names: &[String]) -> ScriptFlags {
    let mut f = ScriptFlags {
        shebang: true,
        ..ScriptFlags::default()
    };
    for n in names {
        match n.as_str() {
            "no-writes" => f.no_writes = true,
            "allow-oom" => f.allow_oom = true,
            "allow-stale" => f.allow_stale = true,
            "no-cluster" => f.no_cluster = true,
            "allow-cross-slot-keys" => f.allow_cross_slot_keys = true,
            _ => {}
        }
    }
    f
}

impl Functions {
    /// Compiles and runs a library's code into a [`Library`] (not yet linked).
    fn create(env: &mut LuaEnv, code: &Bytes, timeout_ms: u64) -> Result<Arc<Library>, String> {
        let (name, body) = metadata(code)?;
        let registered = env.load_library(body, timeout_ms)?;
        if registered.is_empty() {
            return Err("No functions registered".into());
        }
        let functions = registered
            .into_iter()
            .map(|r: Registered| {
                Arc::new(FunctionInfo {
                    flags: flags_from(&r.flags),
                    name: r.name,
                    description: r.description,
                    library: name.clone(),
                })
            })
            .collect();
        Ok(Arc::new(Library {
            name,
            code: code.clone(),
            functions,
        }))
    }

    /// FUNCTION LOAD [REPLACE]: returns the library's name. Errors are Redis's
    /// messages (the reply adds `ERR `).
    pub fn load(&self, code: &Bytes, replace: bool, timeout_ms: u64) -> Result<String, String> {
        let (name, _) = metadata(code)?;
        if !replace && self.registry.read().libraries.contains_key(&name) {
            return Err(format!("Library '{name}' already exists"));
        }
        let lib = self
            .states
            .with_scratch(|env| Self::create(env, code, timeout_ms))?;
        let mut registry = self.registry.write();
        let mut next = registry.clone();
        next.unlink(&lib.name);
        next.link(lib)?;
        self.swap(&mut registry, next);
        Ok(name)
    }

    /// Makes `next` the current registry, as a new generation.
    fn swap(&self, registry: &mut Registry, mut next: Registry) {
        next.generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.states.new_generation(next.generation);
        *registry = next;
    }

    /// FUNCTION DELETE.
    pub fn delete(&self, name: &[u8]) -> Result<(), String> {
        let name = std::str::from_utf8(name).map_err(|_| "Library not found".to_string())?;
        let mut registry = self.registry.write();
        let mut next = registry.clone();
        if next.unlink(name).is_none() {
            return Err("Library not found".into());
        }
        self.swap(&mut registry, next);
        Ok(())
    }

    /// FUNCTION FLUSH: every library goes, and the Lua states start afresh.
    pub fn flush(&self) {
        let mut registry = self.registry.write();
        self.swap(&mut registry, Registry::default());
    }

    /// The function FCALL names (case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<Arc<FunctionInfo>> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        self.registry.read().functions.get(&name).cloned()
    }

    /// Runs `f` with this thread's Lua state and the function's callback, the
    /// state first loading the current libraries if they changed since it last ran.
    pub fn with_function<T>(
        &self,
        info: &FunctionInfo,
        f: impl FnOnce(&mut LuaEnv, &mlua::Function) -> T,
    ) -> Result<T, String> {
        let generation = self.registry.read().generation;
        self.states.with_current(
            generation,
            |st| self.load_all(st),
            |st| {
                let callback = st
                    .callbacks
                    .get(&info.name.to_ascii_lowercase())
                    .cloned()
                    .ok_or_else(|| "ERR Function not found".to_string())?;
                Ok(f(&mut st.env, &callback))
            },
        )?
    }

    /// Loads every current library into a fresh state (no time limit: each
    /// loaded once already).
    fn load_all(&self, st: &mut ThreadState) -> Result<(), String> {
        let (generation, libraries) = {
            let r = self.registry.read();
            (
                r.generation,
                r.libraries.values().cloned().collect::<Vec<_>>(),
            )
        };
        for lib in libraries {
            let (_, body) = metadata(&lib.code)?;
            for r in st.env.load_library(body, 0)? {
                st.callbacks.insert(r.name.to_ascii_lowercase(), r.callback);
            }
        }
        st.generation = generation;
        Ok(())
    }

    /// The libraries, by name.
    pub fn libraries(&self) -> Vec<Arc<Library>> {
        self.registry.read().libraries.values().cloned().collect()
    }

    /// (libraries, functions) counts.
    pub fn counts(&self) -> (usize, usize) {
        let r = self.registry.read();
        (r.libraries.len(), r.functions.len())
    }

    /// Bytes of library code held (`used_memory_functions`).
    pub fn code_bytes(&self) -> usize {
        self.registry
            .read()
            .libraries
            .values()
            .map(|l| l.code.len())
            .sum()
    }

    /// Memory of the threads' functions Lua states (`used_memory_vm_functions`).
    pub fn lua_memory(&self) -> usize {
        self.states.memory()
    }

    /// FUNCTION DUMP: every library in Redis's payload format.
    pub fn dump(&self) -> Bytes {
        let mut body = Vec::new();
        for lib in self.libraries() {
            body.push(dump_payload::OPCODE_FUNCTION2);
            dump_payload::put_string(&mut body, &lib.code);
        }
        dump_payload::seal(body)
    }

    /// FUNCTION RESTORE: all of the payload's libraries, or nothing.
    pub fn restore(&self, payload: &[u8], policy: RestorePolicy) -> Result<(), String> {
        let body = dump_payload::open(payload)
            .ok_or_else(|| "DUMP payload version or checksum are wrong".to_string())?;
        let mut reader = dump_payload::Reader::new(body);
        let mut incoming = Registry::default();
        self.states.with_scratch(|env| -> Result<(), String> {
            while !reader.is_empty() {
                match reader.byte() {
                    Some(dump_payload::OPCODE_FUNCTION2) => {}
                    Some(dump_payload::OPCODE_FUNCTION_PRE_GA) => {
                        return Err("Pre-GA function format not supported".into())
                    }
                    Some(_) => return Err("given type is not a function".into()),
                    None => return Err("can not read data type".into()),
                }
                let code = reader
                    .string()
                    .ok_or_else(|| "Failed loading library payload".to_string())?;
                let lib = Self::create(env, &Bytes::from(code), 0)?;
                if incoming.libraries.contains_key(&lib.name) {
                    return Err(format!("Library '{}' already exists", lib.name));
                }
                incoming.link(lib)?;
            }
            Ok(())
        })?;
        let mut registry = self.registry.write();
        if policy == RestorePolicy::Flush {
            self.swap(&mut registry, incoming);
            return Ok(());
        }
        let mut next = registry.clone();
        for name in incoming.libraries.keys() {
            if next.libraries.contains_key(name) {
                if policy == RestorePolicy::Append {
                    return Err(format!("Library {name} already exists"));
                }
                next.unlink(name);
            }
        }
        for lib in incoming.libraries.into_values() {
            next.link(lib)?;
        }
        self.swap(&mut registry, next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn metadata_errors_match_redis() {
        let cases = [
            ("return 1", "Missing library metadata"),
            ("#!lua name=x", "Invalid library metadata"),
            ("#! name=x\n", "Engine '' not found"),
            ("#!lua\n", "Library name was not given"),
            ("#!lua name=a name=b\n", "Invalid metadata value, name argument was given multiple times"),
            ("#!lua name=a foo=bar\n", "Invalid metadata value given: foo=bar"),
            ("#!lua name=a-b\n", "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"),
            ("#!js name=a\n", "Engine 'js' not found"),
        ];
        for (c, want) in cases {
            assert_eq!(metadata(c.as_bytes()).err().as_deref(), Some(want), "{c}");
        }
        assert_eq!(
            metadata(b"#!LUA name=\"foo\"\nx").unwrap(),
            ("foo".into(), &b"\nx"[..])
        );
    }

    #[test]
    fn load_replace_delete_and_collisions() {
        let fs = Functions::default();
        let lib1 = code("#!lua name=lib1\nredis.register_function('f1', function() return 1 end)");
        assert_eq!(fs.load(&lib1, false, LOAD_TIMEOUT_MS).unwrap(), "lib1");
        assert_eq!(
            fs.load(&lib1, false, LOAD_TIMEOUT_MS).unwrap_err(),
            "Library 'lib1' already exists"
        );
        let lib2 = code("#!lua name=lib2\nredis.register_function('F1', function() return 2 end)");
        assert_eq!(
            fs.load(&lib2, false, LOAD_TIMEOUT_MS).unwrap_err(),
            "Function F1 already exists"
        );
        assert!(fs.get(b"F1").is_some());
        assert_eq!(fs.counts(), (1, 1));
        // A failing REPLACE keeps the old library.
        let broken = code("#!lua name=lib1\nredis.register_function('f1', 'x')");
        let e = fs.load(&broken, true, LOAD_TIMEOUT_MS).unwrap_err();
        assert!(
            e.contains("second argument to redis.register_function must be a function"),
            "{e}"
        );
        assert_eq!(fs.get(b"f1").unwrap().library, "lib1");
        assert!(fs.delete(b"nope").is_err());
        fs.delete(b"lib1").unwrap();
        assert_eq!(fs.counts(), (0, 0));
    }

    #[test]
    fn dump_restore_policies() {
        let fs = Functions::default();
        let a = code("#!lua name=a\nredis.register_function{function_name='fa', callback=function() return 1 end, flags={'no-writes'}, description='d'}");
        fs.load(&a, false, 0).unwrap();
        let payload = fs.dump();
        assert_eq!(
            fs.restore(&payload, RestorePolicy::Append).unwrap_err(),
            "Library a already exists"
        );
        fs.restore(&payload, RestorePolicy::Replace).unwrap();
        fs.flush();
        fs.restore(&payload, RestorePolicy::Append).unwrap();
        let f = fs.get(b"fa").unwrap();
        assert_eq!(f.flag_names(), vec!["no-writes"]);
        assert_eq!(f.description.as_deref(), Some(&b"d"[..]));
        assert_eq!(
            fs.restore(b"bad_payload", RestorePolicy::Append)
                .unwrap_err(),
            "DUMP payload version or checksum are wrong"
        );
        assert_eq!(fs.counts(), (1, 1));
    }

    /// A payload made by redis-server 7.0.15's FUNCTION DUMP (RDB version 10, the
    /// library's code LZF-compressed) restores, and its function runs.
    #[test]
    fn restores_a_payload_made_by_redis() {
        const REDIS_PAYLOAD: &[u8] = &[
            0xf5, 0xc3, 0x40, 0x4b, 0x40, 0x7d, 0x1f, 0x23, 0x21, 0x6c, 0x75, 0x61, 0x20, 0x6e,
            0x61, 0x6d, 0x65, 0x3d, 0x73, 0x65, 0x65, 0x64, 0x0a, 0x72, 0x65, 0x64, 0x69, 0x73,
            0x2e, 0x72, 0x65, 0x67, 0x69, 0x73, 0x74, 0x65, 0x72, 0x5f, 0x66, 0x09, 0x75, 0x6e,
            0x63, 0x74, 0x69, 0x6f, 0x6e, 0x28, 0x22, 0x61, 0x20, 0x00, 0x02, 0x22, 0x2c, 0x20,
            0xe0, 0x00, 0x10, 0x08, 0x29, 0x20, 0x72, 0x65, 0x74, 0x75, 0x72, 0x6e, 0x20, 0x60,
            0x19, 0xe0, 0x27, 0x00, 0x05, 0x22, 0x20, 0x65, 0x6e, 0x64, 0x29, 0x0a, 0x00, 0x20,
            0xbb, 0xe1, 0xca, 0x1a, 0x9d, 0xde, 0xb8,
        ];
        let fs = Functions::default();
        fs.restore(REDIS_PAYLOAD, RestorePolicy::Append).unwrap();
        let lib = &fs.libraries()[0];
        assert_eq!(lib.name, "seed");
        assert!(lib
            .code
            .starts_with(b"#!lua name=seed\nredis.register_function(\"aaaa\""));
        assert!(fs.get(b"AAAA").is_some());
        // One flipped bit fails the checksum and changes nothing.
        let mut bad = REDIS_PAYLOAD.to_vec();
        bad[20] ^= 4;
        fs.flush();
        assert!(fs.restore(&bad, RestorePolicy::Append).is_err());
        assert_eq!(fs.counts(), (0, 0));
    }

    #[test]
    fn load_timeout_and_library_api() {
        let fs = Functions::default();
        let spin = code("#!lua name=spin\nlocal a = 1 while 1 do a = a + 1 end");
        let e = fs.load(&spin, false, 50).unwrap_err();
        assert_eq!(e, "Error registering functions: ERR FUNCTION LOAD timeout");
        let math = code("#!lua name=m\nreturn math.random()");
        let e = fs.load(&math, false, LOAD_TIMEOUT_MS).unwrap_err();
        assert!(
            e.contains("Script attempted to access nonexistent global variable 'math'"),
            "{e}"
        );
        let call = code("#!lua name=m\nreturn redis.call('ping')");
        let e = fs.load(&call, false, LOAD_TIMEOUT_MS).unwrap_err();
        assert!(e.contains("nonexistent global variable 'call'"), "{e}");
        let none = code("#!lua name=m\nreturn 1");
        assert_eq!(
            fs.load(&none, false, LOAD_TIMEOUT_MS).unwrap_err(),
            "No functions registered"
        );
        let global = code("#!lua name=m\na = 1");
        let e = fs.load(&global, false, LOAD_TIMEOUT_MS).unwrap_err();
        assert!(e.contains("Attempt to modify a readonly table"), "{e}");
    }
}
