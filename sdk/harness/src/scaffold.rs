//! `switchboard connector new NAME`: create a connector crate to start from.
//!
//! [`scaffold`] writes `<dir>/<name>/`:
//!
//! ```text
//! Cargo.toml            cdylib; path dependency on the SDK; small release profile;
//!                       the test harness as a dev-dependency; its own [workspace]
//! .cargo/config.toml    build.target = "wasm32-wasip2"
//! rust-toolchain.toml   the toolchain Switchboard pins, with wasm32-wasip2
//! src/lib.rs            the `connectors/template` connector, renamed
//! tests/connector.rs    harness tests of it against a fake upstream
//! README.md             build, test and deploy commands
//! .gitignore
//! ```
//!
//! The source and tests are the very files of `connectors/template` and the
//! harness's own template tests (embedded at compile time), so what
//! `scaffold` writes is what CI builds and tests.
//!
//! Invariants:
//! - The name is validated before anything is written (see [`validate_name`]).
//! - Nothing is overwritten: an existing non-empty `<dir>/<name>` is an error.
//! - All or nothing: files are written to a hidden sibling directory that is
//!   renamed into place at the end, and removed on failure.
//! - The SDK is referenced by a relative path when the crate and the SDK
//!   share more than the filesystem root, so the pair can be moved together.

pub use crate::polyglot::{scaffold_python, scaffold_ts};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The template connector's source (compiled in CI as `connectors/template`).
const TEMPLATE_LIB: &str = include_str!("../../../connectors/template/src/lib.rs");
/// The first line of [`TEMPLATE_LIB`], replaced by the new connector's name.
const TEMPLATE_HEADING: &str = "//! # template — a starting point for a Switchboard connector";
/// The template's tests (run in CI against `connectors/template`).
const TEMPLATE_TESTS: &str = include_str!("../tests/connectors/template.rs");
/// The line of [`TEMPLATE_TESTS`] naming the connector under test.
const TEMPLATE_NAME_LINE: &str = "const NAME: &str = \"template\";";
/// The repository's toolchain pin, whose channel new crates reuse.
const REPO_TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// Names a connector may not take: Rust keywords and names cargo reserves
/// (it refuses them as package names), Windows device names, and the
/// generated crate's own dependencies.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "build",
    "const",
    "continue",
    "core",
    "crate",
    "deps",
    "do",
    "dyn",
    "else",
    "enum",
    "examples",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "incremental",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "con",
    "prn",
    "aux",
    "nul",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
    "switchboard-sdk",
    "switchboard-connector-test",
    "tokio",
    "serde",
    "serde-json",
    "wit-bindgen",
];

/// Why [`scaffold`] refused or failed. Nothing is left behind in either case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name is not a valid connector name.
    #[error("invalid connector name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `<dir>/<name>` exists and is not an empty directory.
    #[error("{0} already exists and is not empty; choose another name or directory")]
    AlreadyExists(PathBuf),
    /// `sdk_path` is not the `switchboard-sdk` crate.
    #[error("{path} is not the switchboard-sdk crate: {reason}")]
    NotAnSdk {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A path cannot be written into `Cargo.toml` (not UTF-8).
    #[error("path is not valid UTF-8: {0}")]
    NonUtf8Path(PathBuf),
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create a new connector crate `<dir>/<name>` that depends on the SDK at
/// `sdk_path` (the `sdk/` directory of a Switchboard checkout); returns the
/// crate's directory. `dir` is created if missing.
///
/// The crate's tests use this harness (`<sdk_path>/harness`); if it is not
/// there, the crate is written without tests and its README says so.
///
/// ```no_run
/// use std::path::Path;
/// let dir = switchboard_connector_test::scaffold("billing", Path::new("."), Path::new("sdk"))?;
/// println!("created {}; next: cd {} && cargo build --release", dir.display(), dir.display());
/// # Ok::<(), switchboard_connector_test::ScaffoldError>(())
/// ```
pub fn scaffold(name: &str, dir: &Path, sdk_path: &Path) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let sdk = sdk_path
        .canonicalize()
        .map_err(|e| ScaffoldError::NotAnSdk {
            path: sdk_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let rust_version = check_crate(&sdk, "switchboard-sdk")?;
    let harness = sdk.join("harness");
    let with_tests = check_crate(&harness, "switchboard-connector-test").is_ok();

    let target = target_dir(name, dir)?;
    let sdk_ref = relative_to(&target, &sdk);
    let sdk_ref = sdk_ref
        .to_str()
        .ok_or_else(|| ScaffoldError::NonUtf8Path(sdk_ref.clone()))?
        .replace('\\', "/");
    let files = render(name, &sdk_ref, rust_version.as_deref(), with_tests);
    place(&target, &files)?;
    Ok(target)
}

/// `<dir>/<name>`, absolute, after checking that nothing is in the way (an
/// empty directory may be); creates `dir` if missing.
pub(crate) fn target_dir(name: &str, dir: &Path) -> Result<PathBuf, ScaffoldError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let target = dir.join(name);
    match fs::read_dir(&target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ScaffoldError::AlreadyExists(target));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return Err(ScaffoldError::AlreadyExists(target)),
    }
    Ok(target)
}

/// Writes `files` into `target` all or nothing: into a hidden sibling
/// directory first, renamed into place at the end, removed on failure.
pub(crate) fn place(target: &Path, files: &[(&str, String)]) -> Result<(), ScaffoldError> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(ScaffoldError::AlreadyExists(target.to_path_buf()));
    };
    let staging = dir.join(format!(
        ".{}.scaffold-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let written = write_all(&staging, files).and_then(|()| {
        if target.is_dir() {
            fs::remove_dir(target).map_err(io(target))?;
        }
        fs::rename(&staging, target).map_err(io(target))
    });
    if let Err(e) = written {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(())
}

/// Check a connector name: 1–64 characters of `a-z`, `0-9` and `-`,
/// starting with a letter, not ending with `-`, no `--`, and not a
/// reserved word. The name becomes the crate name, the `.wasm` file name
/// (with `_` for `-`) and the name the gateway reports.
///
/// ```
/// use switchboard_connector_test::scaffold::validate_name;
/// assert!(validate_name("hss-east").is_ok());
/// assert!(validate_name("Hss").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |reason: &str| {
        Err(ScaffoldError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() || name.len() > 64 {
        return invalid("must be 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("must start with a lower-case letter a-z");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("may contain only a-z, 0-9 and '-'");
    }
    if name.ends_with('-') || name.contains("--") {
        return invalid("must not end with '-' or contain \"--\"");
    }
    if RESERVED.contains(&name) {
        return invalid("is a reserved word (Rust keyword, cargo/OS reserved name, or a dependency of the generated crate)");
    }
    Ok(())
}

/// Check that `dir` holds the crate `want`; returns its `rust-version`.
fn check_crate(dir: &Path, want: &str) -> Result<Option<String>, ScaffoldError> {
    let manifest = dir.join("Cargo.toml");
    let not = |reason: String| ScaffoldError::NotAnSdk {
        path: dir.to_path_buf(),
        reason,
    };
    let text = fs::read_to_string(&manifest)
        .map_err(|e| not(format!("cannot read {}: {e}", manifest.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| not(format!("{} does not parse: {e}", manifest.display())))?;
    let package = table.get("package").and_then(toml::Value::as_table);
    let name = package
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str);
    if name != Some(want) {
        return Err(not(format!("its package is {name:?}, not {want:?}")));
    }
    Ok(package
        .and_then(|p| p.get("rust-version"))
        .and_then(toml::Value::as_str)
        .map(str::to_string))
}

/// `to` relative to `from` (both absolute), or `to` itself when they share
/// nothing but the root (or, on Windows, are on different drives).
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component<'_>> = from.components().collect();
    let t: Vec<Component<'_>> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let shares_only_root = f
        .iter()
        .take(common)
        .all(|c| matches!(c, Component::RootDir | Component::Prefix(_)));
    if shares_only_root {
        return to.to_path_buf();
    }
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    rel
}

/// The `channel = "…"` of the repository's toolchain pin.
fn toolchain_channel() -> Option<String> {
    let table: toml::Table = REPO_TOOLCHAIN.parse().ok()?;
    table
        .get("toolchain")?
        .get("channel")?
        .as_str()
        .map(str::to_string)
}

/// A TOML basic string for `s`, quotes included.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The files of the new crate: (path relative to it, contents).
fn render(
    name: &str,
    sdk_ref: &str,
    rust_version: Option<&str>,
    with_tests: bool,
) -> Vec<(&'static str, String)> {
    let wasm = format!("{}.wasm", name.replace('-', "_"));
    let rust_version = rust_version
        .map(|v| format!("rust-version = {}\n", toml_str(v)))
        .unwrap_or_default();
    let dev_deps = if with_tests {
        format!(
            "\n[dev-dependencies]\n\
             # Native tests of the built .wasm in the gateway's sandbox:\n\
             #   cargo build --release && cargo test --target host-tuple\n\
             switchboard-connector-test = {{ path = {} }}\n\
             tokio = {{ version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\n",
            toml_str(&format!("{sdk_ref}/harness"))
        )
    } else {
        String::new()
    };
    let cargo_toml = format!(
        "[package]\n\
         name = {name_q}\n\
         version = \"0.1.0\"\n\
         edition = \"2021\"\n\
         {rust_version}\
         publish = false\n\
         \n\
         [lib]\n\
         # A connector is a WebAssembly component; .cargo/config.toml selects\n\
         # wasm32-wasip2, so `cargo build --release` gives target/wasm32-wasip2/release/{wasm}\n\
         crate-type = [\"cdylib\"]\n\
         \n\
         [dependencies]\n\
         switchboard-sdk = {{ path = {sdk_q} }}\n\
         {dev_deps}\
         \n\
         [profile.release]\n\
         # The gateway keeps each loaded version in memory: small beats fast.\n\
         opt-level = \"s\"\n\
         lto = true\n\
         strip = true\n\
         codegen-units = 1\n\
         \n\
         # A workspace of its own, so the crate builds wherever it was created.\n\
         # To add it to an existing workspace, delete this table and list it there.\n\
         [workspace]\n",
        name_q = toml_str(name),
        sdk_q = toml_str(sdk_ref),
    );

    let cargo_config = "[build]\n\
         # Connectors are WebAssembly components. Tests run natively instead:\n\
         #   cargo test --target host-tuple\n\
         target = \"wasm32-wasip2\"\n\
         \n\
         [target.wasm32-wasip2]\n\
         # A 128 KiB stack (Rust's default is 1 MiB): small enough that what a\n\
         # delivery touches stays in the memory the gateway keeps resident\n\
         # between instances, large enough for any payload ingest accepts.\n\
         rustflags = [\"-C\", \"link-arg=-zstack-size=131072\"]\n"
        .to_string();

    let lib_rs = TEMPLATE_LIB.replacen(
        TEMPLATE_HEADING,
        &format!("//! # {name} — a Switchboard connector"),
        1,
    );

    let test_cmd = if with_tests {
        "cargo test --target host-tuple       # native tests of the built .wasm (build first)\n"
    } else {
        ""
    };
    let tests_note = if with_tests {
        format!(
            "## Test\n\n\
             `tests/connector.rs` runs the built `{wasm}` in the gateway's own sandbox\n\
             (`switchboard-connector-test`) against a fake upstream whose answers each test\n\
             scripts. Build first — the tests fail, naming the command, if the `.wasm` is\n\
             missing — then run them natively:\n\n\
             ```sh\n\
             cargo build --release && cargo test --target host-tuple\n\
             ```\n\n\
             Add a case per behaviour that matters to your upstream: each status it\n\
             answers, the request it must receive, `Retry-After`, a payload it must refuse.\n"
        )
    } else {
        "## Test\n\n\
         The SDK at the configured path has no `harness/` next to it, so no tests were\n\
         generated. With a full Switchboard checkout, `switchboard-connector-test` runs\n\
         a built connector against a fake upstream.\n"
            .to_string()
    };
    let readme = format!(
        "# {name} — a Switchboard connector\n\n\
         A WebAssembly component the Switchboard gateway calls once per delivery. As\n\
         generated it POSTs each event's payload to `url` with an `Idempotency-Key`;\n\
         change `deliver` in `src/lib.rs` to map events onto your upstream's API.\n\n\
         ## Build\n\n\
         ```sh\n\
         rustup toolchain install             # once: the pinned toolchain + wasm32-wasip2\n\
         cargo build --release                # -> target/wasm32-wasip2/release/{wasm}\n\
         {test_cmd}\
         ```\n\n\
         {tests_note}\n\
         ## Deploy\n\n\
         ```toml\n\
         [[connectors]]\n\
         name = \"{name}\"\n\
         component = \"path/to/{wasm}\"\n\
         routes = [\"number.*\"]\n\
         allowed_hosts = [\"upstream.example:8080\"]\n\
         [connectors.config]\n\
         url = \"http://upstream.example:8080/events\"\n\
         ```\n\n\
         or upload a new version to a running gateway through the operator API.\n\
         Credentials go in the gateway's secret headers, never in this code.\n\n\
         ## Rules\n\n\
         - Classify each attempt (`done`, `retry`, `reject`); never sleep or loop —\n  \
           the gateway owns backoff, breakers and rate limits.\n\
         - Never panic on input: reject with a reason an operator can act on.\n\
         - Send the delivery id as an idempotency key: delivery is at-least-once.\n"
    );

    let mut files = vec![
        ("Cargo.toml", cargo_toml),
        (".cargo/config.toml", cargo_config),
        ("src/lib.rs", lib_rs),
        ("README.md", readme),
        (".gitignore", "/target\n".to_string()),
    ];
    if let Some(channel) = toolchain_channel() {
        files.push((
            "rust-toolchain.toml",
            format!(
                "# The toolchain Switchboard pins, with the connector target installed\n\
                 # (`rustup toolchain install` once).\n\
                 [toolchain]\n\
                 channel = {}\n\
                 components = [\"rustfmt\", \"clippy\"]\n\
                 targets = [\"wasm32-wasip2\"]\n\
                 profile = \"minimal\"\n",
                toml_str(&channel)
            ),
        ));
    }
    if with_tests {
        files.push((
            "tests/connector.rs",
            TEMPLATE_TESTS.replacen(
                TEMPLATE_NAME_LINE,
                &format!("const NAME: &str = {};", toml_str(name)),
                1,
            ),
        ));
    }
    files
}

fn write_all(root: &Path, files: &[(&str, String)]) -> Result<(), ScaffoldError> {
    for (rel, contents) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::write(&path, contents).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    fn repo_sdk() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn names() {
        for ok in ["hss", "hss-east", "crm2", "a", "sms-gw-1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Hss",
            "1hss",
            "-hss",
            "hss-",
            "hss--east",
            "hss_east",
            "hss east",
            "../x",
            "hss/x",
            "é",
            "fn",
            "test",
            "con",
            "tokio",
            "switchboard-sdk",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_name(bad), Err(ScaffoldError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/w/a/new"), Path::new("/w/sdk")),
            PathBuf::from("../../sdk")
        );
        assert_eq!(
            relative_to(Path::new("/tmp/x/new"), Path::new("/w/sdk")),
            PathBuf::from("/w/sdk")
        );
    }

    #[test]
    fn templates_still_have_the_lines_scaffold_replaces() {
        assert!(TEMPLATE_LIB.starts_with(TEMPLATE_HEADING));
        assert_eq!(TEMPLATE_TESTS.matches(TEMPLATE_NAME_LINE).count(), 1);
        assert!(toolchain_channel().is_some());
    }

    #[test]
    fn refuses_bad_name_missing_sdk_and_existing_dir_without_writing() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            scaffold("Bad", tmp.path(), &repo_sdk()),
            Err(ScaffoldError::InvalidName { .. })
        ));
        assert!(matches!(
            scaffold("ok", tmp.path(), tmp.path()),
            Err(ScaffoldError::NotAnSdk { .. })
        ));
        fs::create_dir_all(tmp.path().join("taken/src")).unwrap();
        assert!(matches!(
            scaffold("taken", tmp.path(), &repo_sdk()),
            Err(ScaffoldError::AlreadyExists(_))
        ));
        let mut left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, vec!["taken"], "nothing else written");
    }

    /// Scaffolds into a temporary directory, checks every file, then builds
    /// the crate for wasm32-wasip2 with its own target dir (a nested build of
    /// the SDK's dependencies: ~30–60 s on 2 cores) and checks the `.wasm`.
    #[test]
    fn scaffolds_a_crate_that_builds_to_a_component() {
        let tmp = tempfile::tempdir().unwrap();
        // An empty directory of that name is fine.
        fs::create_dir(tmp.path().join("billing-eu")).unwrap();
        let dir = scaffold("billing-eu", tmp.path(), &repo_sdk()).expect("scaffold");
        assert_eq!(dir, tmp.path().canonicalize().unwrap().join("billing-eu"));

        let read =
            |rel: &str| fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml parses");
        assert_eq!(manifest["package"]["name"].as_str(), Some("billing-eu"));
        assert_eq!(manifest["package"]["rust-version"].as_str(), Some("1.95"));
        assert_eq!(
            manifest["lib"]["crate-type"].as_array().unwrap()[0].as_str(),
            Some("cdylib")
        );
        let sdk = manifest["dependencies"]["switchboard-sdk"]["path"]
            .as_str()
            .unwrap();
        // Relative paths in the manifest are relative to the crate itself.
        assert_eq!(
            dir.join(sdk).canonicalize().unwrap(),
            repo_sdk().canonicalize().unwrap()
        );
        let harness = manifest["dev-dependencies"]["switchboard-connector-test"]["path"]
            .as_str()
            .unwrap();
        assert!(dir.join(harness).join("Cargo.toml").is_file(), "{harness}");
        assert_eq!(
            manifest["profile"]["release"]["opt-level"].as_str(),
            Some("s")
        );
        assert!(manifest.contains_key("workspace"));

        let config: toml::Table = read(".cargo/config.toml").parse().unwrap();
        assert_eq!(config["build"]["target"].as_str(), Some("wasm32-wasip2"));
        let flags = config["target"]["wasm32-wasip2"]["rustflags"]
            .as_array()
            .unwrap();
        assert!(
            flags
                .iter()
                .any(|f| f.as_str() == Some("link-arg=-zstack-size=131072")),
            "{flags:?}"
        );
        let toolchain: toml::Table = read("rust-toolchain.toml").parse().unwrap();
        assert_eq!(
            toolchain["toolchain"]["channel"].as_str(),
            toolchain_channel().as_deref()
        );

        let lib = read("src/lib.rs");
        assert!(lib.starts_with("//! # billing-eu — a Switchboard connector\n"));
        assert!(lib.contains("switchboard_sdk::export!"));
        let tests = read("tests/connector.rs");
        assert!(tests.contains("const NAME: &str = \"billing-eu\";"));
        assert!(!tests.contains("\"template\""));
        let readme = read("README.md");
        for needle in [
            "cargo build --release",
            "cargo test --target host-tuple",
            "billing_eu.wasm",
        ] {
            assert!(readme.contains(needle), "README lacks {needle:?}");
        }
        assert_eq!(read(".gitignore"), "/target\n");
        assert!(
            !fs::read_dir(tmp.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')),
            "staging directory removed"
        );

        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let started = Instant::now();
        let out = Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "cargo build of the scaffolded crate failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wasm = dir.join("target/wasm32-wasip2/release/billing_eu.wasm");
        let bytes = fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        // A component (layer 1), not a core module: \0asm, version 0x0d, layer 1.
        assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00", "not a component");
        eprintln!(
            "scaffolded crate built in {:?} ({} bytes)",
            started.elapsed(),
            bytes.len()
        );
    }
}
