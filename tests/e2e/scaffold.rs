//! `switchboard connector new --lang ts|python`: what a TypeScript or Python
//! developer does after it, as the scaffold's README says — install, build,
//! run its own tests, hot-load it into a running gateway — each step timed.
//!
//! Needs Node.js 20 with npm and Python 3 with venv; the toolchains come
//! from npm and PyPI (after `make connectors`, from their local caches).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::harness::{cli, free_port, write_config_on, Db, FakeHss, Gateway};

/// Runs `program args` in `dir` (with the gateway binary as
/// `$SWITCHBOARD_BIN`); panics with its output if it fails.
fn step(what: &str, dir: &Path, program: &str, args: &[&str]) {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("SWITCHBOARD_BIN", env!("CARGO_BIN_EXE_switchboard"))
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
}

async fn scaffold_build_test_deploy(lang: &str, name: &str, commands: &[(&str, &str, &[&str])]) {
    let dir = tempfile::tempdir().unwrap();
    step(
        "connector new",
        dir.path(),
        env!("CARGO_BIN_EXE_switchboard"),
        &["connector", "new", "--lang", lang, name, "--dir", "."],
    );
    let project = dir.path().join(name);
    for (what, program, args) in commands {
        step(what, &project, program, args);
    }

    // Hot-load the build into a running gateway, in place of its component.
    let hss = FakeHss::default();
    let hss_addr = hss.start().await;
    let url = Db::Sqlite.fresh_url(dir.path()).await;
    let config = write_config_on(&url, dir.path(), free_port(), hss_addr, 4);
    let gw = Gateway::start(&config);
    let wasm = project.join(format!("{name}.wasm"));
    let (code, out, err) = cli(&gw, &["connector", "deploy", "hss", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "deploy: {out}\n{err}");
    let v: Value = reqwest::get(gw.url("/v1/connectors/hss"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["component"]["info"]["name"], name, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_connector_scaffolds_builds_tests_and_deploys() {
    scaffold_build_test_deploy(
        "ts",
        "billing-ts",
        &[
            (
                "npm ci",
                "npm",
                &["ci", "--prefer-offline", "--no-audit", "--no-fund"],
            ),
            ("npm run build", "npm", &["run", "build"]),
            ("npm test", "npm", &["test"]),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_connector_scaffolds_builds_tests_and_deploys() {
    scaffold_build_test_deploy(
        "python",
        "billing-py",
        &[
            ("make build", "make", &["build"]),
            ("make test", "make", &["test"]),
        ],
    )
    .await
}
