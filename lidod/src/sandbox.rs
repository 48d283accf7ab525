//! What a child process of `lidod` is given, and nothing more.
//!
//! - Environment: every child starts from an empty environment
//!   ([`child_env`]): a minimal base ([`BASE_ENV`]), the variables its
//!   manager names for it (a broker: those its options read, such as
//!   Kraken's `api_key_env`; a trader: what the operator passes with
//!   `env_pass`), then what its manager sets. `lidod`'s own environment
//!   (venue keys, `LIDO_CLUSTER_SECRET`) is never inherited.
//! - Files: a hosted trader (customers' code) runs under Landlock
//!   ([`Sandbox`]): `lidod sandbox … -- PROGRAM` restricts itself, then
//!   executes the trader. It may read and execute the system's directories
//!   ([`SYSTEM_READ`]), its program and the paths the operator lists, and
//!   read and write its own work dir; nothing else, so not the node's data
//!   dir (tokens, cluster secret, journal) nor the rest of `/tmp`.
//! - Other processes: Landlock does not stop a read of `/proc/<pid>/environ`
//!   of a process of the same user. So `lidod` makes itself non-dumpable at
//!   start, and the sandbox drops every capability (bounding set included,
//!   so a root trader does not regain them at exec): without
//!   `CAP_SYS_PTRACE` the trader cannot read `lidod`'s environment or memory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};
use lido_shared::access::CLUSTER_SECRET_ENV;
use serde::Deserialize;

/// Passed to every child from `lidod`'s environment, if set.
pub const BASE_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` for a child when `lidod` has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Passed to broker processes (which are `lidod` itself) on top of the
/// base: where they keep state, how they log, how they reach venues.
pub const BROKER_ENV: &[&str] = &[
    "HOME",
    "XDG_STATE_HOME",
    "XDG_CONFIG_HOME",
    "LIDO_LOG",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    // The crash tests' pause point; honored by debug builds only.
    "LIDO_TEST_PAUSE_AT",
];

/// Never passed from `lidod`'s environment to a trader, whatever the
/// operator asks: `lidod`'s own credentials.
pub const NEVER_PASSED: &[&str] = &[CLUSTER_SECRET_ENV, lido_shared::tls::TLS_CERT_ENV, lido_shared::tls::TLS_KEY_ENV];

/// Directories a sandboxed trader may read and execute.
pub const SYSTEM_READ: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys"];

/// The first `lidod` argument of the launcher that sandboxes a trader.
pub const LAUNCHER_ARG: &str = "sandbox";

/// The environment of a child: the base, then `pass` (names copied from
/// `lidod`'s environment when set), then `set` (later wins).
pub fn child_env(pass: &[String], set: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v));
    };
    put("PATH", DEFAULT_PATH.to_string());
    for name in BASE_ENV.iter().copied().chain(pass.iter().map(String::as_str)) {
        if let Some(value) = std::env::var_os(name) {
            put(name, value.to_string_lossy().into_owned());
        }
    }
    for (k, v) in set {
        put(k, v.clone());
    }
    env
}

/// `[traders]` in the configuration: how hosted traders are confined.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TradersConfig {
    /// `landlock` (default): traders run under Landlock and a trader is
    /// refused where the kernel lacks it; `off`: traders run unconfined
    /// (they can then read everything lidod's user can, the data dir too).
    pub sandbox: SandboxMode,
    /// Paths a sandboxed trader may also read and execute (its libraries,
    /// an interpreter's modules, data files), besides [`SYSTEM_READ`].
    pub read_paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    #[default]
    Landlock,
    Off,
}

/// What one sandboxed trader may reach: read/write its work dir, read and
/// execute [`SYSTEM_READ`] and `read` (its program, the node's CA, the
/// operator's `read_paths`).
#[derive(Clone, Debug, PartialEq)]
pub struct Sandbox {
    pub work_dir: PathBuf,
    pub read: Vec<PathBuf>,
}

impl Sandbox {
    /// The launcher's arguments: `sandbox --work-dir DIR [--read PATH]… -- PROGRAM ARGS…`.
    pub fn launcher_args(&self, program: &Path, args: &[String]) -> Vec<String> {
        let mut out = vec![LAUNCHER_ARG.to_string(), "--work-dir".into(), self.work_dir.display().to_string()];
        for path in &self.read {
            out.push("--read".into());
            out.push(path.display().to_string());
        }
        out.push("--".into());
        out.push(program.display().to_string());
        out.extend(args.iter().cloned());
        out
    }

    /// Refuses a sandbox that would expose `data_dir`: a data dir inside a
    /// readable path (e.g. under `/etc`) or a work dir that holds it.
    pub fn check_against(&self, data_dir: &Path) -> Result<(), String> {
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let readable = SYSTEM_READ.iter().map(PathBuf::from).chain(self.read.iter().cloned());
        for path in readable.chain(std::iter::once(self.work_dir.clone())) {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            if data_dir.starts_with(&path) {
                return Err(format!(
                    "a trader may read {}, which holds the data dir {}; move the data dir or drop that path from \
                     [traders] read_paths",
                    path.display(),
                    data_dir.display()
                ));
            }
        }
        Ok(())
    }
}

/// The file-system rights this build asks Landlock for (best effort below).
const ABI_WANTED: ABI = ABI::V5;

/// Whether this kernel enforces Landlock: creates (and drops) a ruleset.
pub fn landlock_available() -> Result<(), String> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .map(drop)
        .map_err(|e| format!("Landlock is not available on this kernel ({e})"))
}

/// `lidod sandbox`: restricts this process with Landlock, then replaces it
/// with `program`. Returns only on failure: a trader never starts
/// unconfined from here.
pub fn exec(work_dir: &Path, read: &[PathBuf], program: &Path, args: &[String]) -> anyhow::Error {
    if let Err(e) = restrict(work_dir, read, program).and_then(|()| drop_capabilities()) {
        return e;
    }
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(program).args(args).exec();
    anyhow::anyhow!("cannot run the trader {}: {e}", program.display())
}

/// Drops every capability this process has, and those an exec would give
/// back to root (the bounding set). Nothing to do when it has none.
fn drop_capabilities() -> anyhow::Result<()> {
    use caps::CapSet;
    if caps::read(None, CapSet::Permitted).context("cannot read the sandbox's capabilities")?.is_empty() {
        return Ok(());
    }
    // The bounding set first: dropping it needs CAP_SETPCAP, still held.
    for set in [CapSet::Bounding, CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).with_context(|| format!("cannot drop the trader's {set:?} capabilities"))?;
    }
    Ok(())
}

fn restrict(work_dir: &Path, read: &[PathBuf], program: &Path) -> anyhow::Result<()> {
    let abi = ABI_WANTED;
    let read_exec = AccessFs::from_read(abi);
    let exact = |path: &Path, access| -> anyhow::Result<PathBeneath<PathFd>> {
        let fd = PathFd::new(path).with_context(|| format!("cannot open {} for the sandbox", path.display()))?;
        Ok(PathBeneath::new(fd, access))
    };
    let program_access =
        if program.is_dir() { read_exec } else { read_exec & (AccessFs::Execute | AccessFs::ReadFile) };
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(SYSTEM_READ, read_exec))?
        // /dev/null, /dev/urandom, a terminal: read and write, no creation.
        .add_rules(path_beneath_rules(["/dev"], read_exec | AccessFs::WriteFile))?
        .add_rules(path_beneath_rules(read, read_exec))?
        .add_rule(exact(program, program_access)?)?
        .add_rule(exact(work_dir, AccessFs::from_all(abi))?)?
        .restrict_self()
        .context("cannot restrict the trader with Landlock")?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced => {
            tracing::warn!("Landlock enforced in part (an older kernel): the data dir stays unreadable");
            Ok(())
        }
        RulesetStatus::NotEnforced => anyhow::bail!(
            "Landlock is not enforced on this kernel, so the trader would see the node's files; not starting it \
             (set [traders] sandbox = \"off\" to run traders unconfined)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_env_holds_the_base_what_is_passed_and_what_is_set_only() {
        // The test process's own environment has PATH; nothing else leaks.
        let env = child_env(&["LIDO_TEST_SURELY_UNSET".into()], &[("LIDO_TOKEN".into(), "t".into())]);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"PATH"));
        assert!(names.iter().all(|n| BASE_ENV.contains(n) || *n == "LIDO_TOKEN"), "{names:?}");
        let set = child_env(&[], &[("PATH".into(), "/x".into())]);
        assert_eq!(set.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(set.contains(&("PATH".into(), "/x".into())));
    }

    #[test]
    fn a_data_dir_a_trader_could_read_is_refused() {
        let sandbox = Sandbox { work_dir: "/srv/lido/traders/t1".into(), read: vec!["/srv/algos".into()] };
        assert!(sandbox.check_against(Path::new("/srv/lido")).is_ok());
        assert!(sandbox.check_against(Path::new("/etc/lido")).unwrap_err().contains("/etc"));
        assert!(sandbox.check_against(Path::new("/srv/algos/state")).unwrap_err().contains("/srv/algos"));
    }

    #[test]
    fn the_launcher_line_ends_with_the_program_and_its_args() {
        let sandbox = Sandbox { work_dir: "/w".into(), read: vec!["/ca.pem".into()] };
        let args = sandbox.launcher_args(Path::new("/bin/algo"), &["-v".into()]);
        assert_eq!(args, ["sandbox", "--work-dir", "/w", "--read", "/ca.pem", "--", "/bin/algo", "-v"]);
    }
}
