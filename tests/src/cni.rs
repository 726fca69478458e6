//! A CNI runtime in miniature: executes `netd-cni` the way libcni does (the `CNI_*` environment,
//! the network configuration on stdin with `runtimeConfig` built from the capability arguments
//! the plugin declares, `prevResult` = the cached ADD result for CHECK and DEL), inside the test's
//! host namespace (where a runtime and netd run).
use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use serde_json::{Value, json};

use crate::daemon::bin_dir;

pub fn cni_bin() -> PathBuf {
    bin_dir().join("netd-cni")
}

/// One execution of the plugin.
#[derive(Debug, Clone)]
pub struct Exec {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    /// stdout as JSON (the result, or the error object).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {self:?}"))
    }
    /// The error object's code (panics when the call succeeded).
    pub fn err_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected an error: {self:?}");
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no code in {self:?}"))
    }
    pub fn err_msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// The runtime side: one network configuration (a single-plugin conflist), the namespace the
/// runtime runs in, and the cached results of ADD per (container ID, ifname).
pub struct Runtime {
    /// The plugin object of the conflist (`type`, `network`, `capabilities`, netd keys).
    pub plugin: Value,
    /// The conflist's `name` and `cniVersion`.
    pub name: String,
    pub version: String,
    /// Where the plugin runs (the test's host namespace, `/run/netns/...`).
    pub host_netns: String,
    /// Extra environment (e.g. `NETD_HOST`).
    pub env: Vec<(String, String)>,
    cache: Mutex<HashMap<(String, String), Value>>,
}

impl Runtime {
    pub fn new(host_netns: &str, name: &str, version: &str, plugin: Value) -> Self {
        Self {
            plugin,
            name: name.into(),
            version: version.into(),
            host_netns: host_netns.into(),
            env: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The stdin libcni builds: the plugin object with `cniVersion`, `name`, `runtimeConfig`
    /// (capability args the plugin declares), `prevResult`, without `capabilities`.
    pub fn stdin(&self, cap_args: &Value, prev: Option<&Value>) -> Value {
        let mut conf = self.plugin.clone();
        let o = conf.as_object_mut().expect("plugin object");
        let caps = o.remove("capabilities").unwrap_or_else(|| json!({}));
        o.insert("cniVersion".into(), json!(self.version));
        o.insert("name".into(), json!(self.name));
        let mut rc = serde_json::Map::new();
        if let Some(args) = cap_args.as_object() {
            for (k, v) in args {
                if caps.get(k).and_then(Value::as_bool) == Some(true) {
                    rc.insert(k.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            o.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(p) = prev {
            o.insert("prevResult".into(), p.clone());
        }
        conf
    }

    /// Execute the plugin with `env` (CNI_COMMAND etc.) and `stdin`, bounded in time.
    pub fn exec_raw(&self, env: &[(&str, &str)], stdin: &[u8]) -> Exec {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.host_netns))
            .arg("--")
            .arg(cni_bin())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_PATH", bin_dir())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning netd-cni");
        let mut i = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let w = std::thread::spawn(move || {
            let _ = i.write_all(&data);
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if child.try_wait().ok().flatten().is_some() || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("plugin output");
        let _ = w.join();
        Exec {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn exec(&self, cmd: &str, cid: &str, netns: &str, ifname: &str, args: &str, stdin: &Value) -> Exec {
        let mut env = vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname)];
        if !netns.is_empty() {
            env.push(("CNI_NETNS", netns));
        }
        if !args.is_empty() {
            env.push(("CNI_ARGS", args));
        }
        self.exec_raw(&env, &serde_json::to_vec(stdin).unwrap())
    }

    /// ADD; on success the result is cached for CHECK and DEL (as libcni does).
    pub fn add(&self, cid: &str, netns: &str, ifname: &str, cap_args: &Value) -> Exec {
        self.add_with_args(cid, netns, ifname, cap_args, "")
    }

    pub fn add_with_args(&self, cid: &str, netns: &str, ifname: &str, cap_args: &Value, args: &str) -> Exec {
        let e = self.exec("ADD", cid, netns, ifname, args, &self.stdin(cap_args, None));
        if e.code == 0 {
            self.cache.lock().unwrap().insert((cid.into(), ifname.into()), e.json());
        }
        e
    }

    pub fn cached(&self, cid: &str, ifname: &str) -> Option<Value> {
        self.cache.lock().unwrap().get(&(cid.to_string(), ifname.to_string())).cloned()
    }

    pub fn check(&self, cid: &str, netns: &str, ifname: &str, cap_args: &Value) -> Exec {
        let prev = self.cached(cid, ifname);
        self.exec("CHECK", cid, netns, ifname, "", &self.stdin(cap_args, prev.as_ref()))
    }

    /// DEL with the cached result as prevResult; forgets it on success.
    pub fn del(&self, cid: &str, netns: &str, ifname: &str, cap_args: &Value) -> Exec {
        let prev = self.cached(cid, ifname);
        let e = self.exec("DEL", cid, netns, ifname, "", &self.stdin(cap_args, prev.as_ref()));
        if e.code == 0 {
            self.cache.lock().unwrap().remove(&(cid.to_string(), ifname.to_string()));
        }
        e
    }

    /// GC with `cni.dev/valid-attachments` (and the older `cni.dev/attachments`, as libcni sends both).
    pub fn gc(&self, valid: &[(&str, &str)]) -> Exec {
        let mut conf = self.stdin(&json!({}), None);
        let list: Vec<Value> = valid.iter().map(|(c, i)| json!({"containerID": c, "ifname": i})).collect();
        conf["cni.dev/valid-attachments"] = json!(list);
        conf["cni.dev/attachments"] = json!(list);
        self.exec_raw(&[("CNI_COMMAND", "GC")], &serde_json::to_vec(&conf).unwrap())
    }

    pub fn status(&self) -> Exec {
        self.exec_raw(&[("CNI_COMMAND", "STATUS")], &serde_json::to_vec(&self.stdin(&json!({}), None)).unwrap())
    }

    pub fn version(&self) -> Exec {
        self.exec_raw(&[("CNI_COMMAND", "VERSION")], format!("{{\"cniVersion\":\"{}\"}}", self.version).as_bytes())
    }
}

/// The container address of an ADD result (`A.B.C.D`, without the prefix).
pub fn result_ip(r: &Value) -> String {
    let a = r["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address in {r}"));
    a.split('/').next().unwrap().to_string()
}
