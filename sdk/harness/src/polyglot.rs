//! `switchboard connector new --lang ts|python NAME`: a connector in
//! TypeScript or Python that builds, tests and deploys on its own.
//!
//! Everything it needs is written into it, from this very repository at the
//! gateway's build (embedded at compile time, so no path is fixed):
//!
//! ```text
//! TypeScript                             Python
//! package.json, package-lock.json        requirements.txt (componentize-py, hashes)
//!   (the SDK's toolchain pins)           Makefile: build (venv + build.py), test
//! src/index.ts       the connector       app.py             the connector
//! test/connector.test.mjs  (node --test) tests/test_connector.py  (unittest)
//! switchboard/       SDK, build.mjs,     switchboard_connector/  SDK
//!                    tsconfig.json, wit/ build.py, wit/
//! README.md, .gitignore                  README.md, .gitignore
//! ```
//!
//! The tests run the built component in the gateway's sandbox with
//! `switchboard connector check` (`$SWITCHBOARD_BIN`, else `switchboard` on
//! the PATH) against a local server: SPEC §4.5's headers and classification,
//! `Retry-After`, a configuration mistake. The names, files and invariants
//! (validated name, nothing overwritten, all or nothing) are `scaffold`'s.

use crate::scaffold::{place, target_dir, validate_name, ScaffoldError};
use std::path::{Path, PathBuf};

/// The connector world and the WASI packages it uses, as `wit/…` paths.
const WIT: &[(&str, &str)] = &[
    (
        "wit/switchboard-connector-0.1.0/connector.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/connector.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/cli/cli.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/cli/cli.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/clocks/clocks.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/clocks/clocks.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/filesystem/filesystem.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/http/http.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/http/http.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/io/io.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/io/io.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/random/random.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/random/random.wit"),
    ),
    (
        "wit/switchboard-connector-0.1.0/deps/sockets/sockets.wit",
        include_str!("../../../wit/switchboard-connector-0.1.0/deps/sockets/sockets.wit"),
    ),
];

const TS_SDK: &str = include_str!("../../ts/src/index.ts");
const TS_BUILD: &str = include_str!("../../ts/build.mjs");
const TS_CONFIG: &str = include_str!("../../ts/tsconfig.json");
const TS_PACKAGE: &str = include_str!("../../ts/package.json");
const TS_LOCK: &str = include_str!("../../ts/package-lock.json");
/// The SDK package's name in [`TS_PACKAGE`] and [`TS_LOCK`], replaced by the connector's.
const TS_SDK_NAME: &str = "\"name\": \"@switchboard/connector-sdk\"";
const TS_TEMPLATE: &str = include_str!("templates/ts/index.ts");
const TS_TEST: &str = include_str!("templates/ts/connector.test.mjs");
const TS_README: &str = include_str!("templates/ts/README.md");

const PY_SDK: &str = include_str!("../../python/switchboard_connector/__init__.py");
const PY_BUILD: &str = include_str!("../../python/build.py");
const PY_REQUIREMENTS: &str = include_str!("../../python/requirements.txt");
const PY_TEMPLATE: &str = include_str!("templates/python/app.py");
const PY_TEST: &str = include_str!("templates/python/test_connector.py");
const PY_MAKEFILE: &str = include_str!("templates/python/Makefile");
const PY_README: &str = include_str!("templates/python/README.md");

/// The placeholder the templates use for the connector's name.
const NAME: &str = "CONNECTOR_NAME";

/// Creates `<dir>/<name>/`, a TypeScript connector; returns its path.
///
/// ```no_run
/// let path = switchboard_connector_test::scaffold::scaffold_ts("billing", std::path::Path::new(".")).unwrap();
/// ```
pub fn scaffold_ts(name: &str, dir: &Path) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let target = target_dir(name, dir)?;
    let named = |text: &str| text.replace(NAME, name);
    let own_name = format!("\"name\": \"{name}\"");
    let package = TS_PACKAGE.replacen(TS_SDK_NAME, &own_name, 1).replacen(
        "\"private\": true,",
        &format!(
            "\"private\": true,\n  \"scripts\": {{\n    \"build\": \"node switchboard/build.mjs . -o {name}.wasm\",\n    \"test\": \"node --test test/\"\n  }},"
        ),
        1,
    );
    let mut files: Vec<(&str, String)> = vec![
        ("package.json", package),
        ("package-lock.json", TS_LOCK.replace(TS_SDK_NAME, &own_name)),
        ("src/index.ts", named(TS_TEMPLATE)),
        ("test/connector.test.mjs", named(TS_TEST)),
        ("README.md", named(TS_README)),
        (
            ".gitignore",
            "node_modules/\nswitchboard/generated/\n*.wasm\n".into(),
        ),
        ("switchboard/src/index.ts", TS_SDK.into()),
        ("switchboard/build.mjs", TS_BUILD.into()),
        ("switchboard/tsconfig.json", TS_CONFIG.into()),
    ];
    let wit: Vec<(String, String)> = WIT
        .iter()
        .map(|(path, text)| (format!("switchboard/{path}"), text.to_string()))
        .collect();
    files.extend(wit.iter().map(|(p, t)| (p.as_str(), t.clone())));
    place(&target, &files)?;
    Ok(target)
}

/// Creates `<dir>/<name>/`, a Python connector; returns its path.
///
/// ```no_run
/// let path = switchboard_connector_test::scaffold::scaffold_python("billing", std::path::Path::new(".")).unwrap();
/// ```
pub fn scaffold_python(name: &str, dir: &Path) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let target = target_dir(name, dir)?;
    let named = |text: &str| text.replace(NAME, name);
    let mut files: Vec<(&str, String)> = vec![
        ("app.py", named(PY_TEMPLATE)),
        ("tests/test_connector.py", named(PY_TEST)),
        ("Makefile", named(PY_MAKEFILE)),
        ("README.md", named(PY_README)),
        (".gitignore", ".venv/\n__pycache__/\n*.wasm\n".into()),
        ("switchboard_connector/__init__.py", PY_SDK.into()),
        ("build.py", PY_BUILD.into()),
        ("requirements.txt", PY_REQUIREMENTS.into()),
    ];
    files.extend(WIT.iter().map(|(p, t)| (*p, t.to_string())));
    place(&target, &files)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typescript_scaffold_names_itself_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = scaffold_ts("billing-ts", dir.path()).unwrap();
        let package = std::fs::read_to_string(path.join("package.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&package).unwrap();
        assert_eq!(v["name"], "billing-ts");
        assert_eq!(
            v["scripts"]["build"],
            "node switchboard/build.mjs . -o billing-ts.wasm"
        );
        let lock: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path.join("package-lock.json")).unwrap())
                .unwrap();
        assert_eq!(lock["name"], "billing-ts");
        assert_eq!(lock["packages"][""]["name"], "billing-ts");
        let source = std::fs::read_to_string(path.join("src/index.ts")).unwrap();
        assert!(source.contains("name: 'billing-ts'"), "{source}");
        assert!(!source.contains(NAME));
        assert!(path
            .join("switchboard/wit/switchboard-connector-0.1.0/connector.wit")
            .is_file());
        // Nothing is overwritten.
        assert!(matches!(
            scaffold_ts("billing-ts", dir.path()),
            Err(ScaffoldError::AlreadyExists(_))
        ));
    }

    #[test]
    fn the_python_scaffold_names_itself_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = scaffold_python("billing-py", dir.path()).unwrap();
        for file in ["app.py", "tests/test_connector.py", "Makefile", "README.md"] {
            let text = std::fs::read_to_string(path.join(file)).unwrap();
            assert!(!text.contains(NAME), "{file}");
        }
        let app = std::fs::read_to_string(path.join("app.py")).unwrap();
        assert!(app.contains("\"billing-py\""), "{app}");
        assert!(path
            .join("wit/switchboard-connector-0.1.0/connector.wit")
            .is_file());
        assert!(matches!(
            scaffold_python("Billing", dir.path()),
            Err(ScaffoldError::InvalidName { .. })
        ));
    }
}
