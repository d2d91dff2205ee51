//! The systemd units and their settings files under `manifests/deploy/` say only what the
//! binaries understand: each unit starts a binary of this package and reads an env file beside
//! it; each `STRATUS_*` setting (set or shown commented out) is the environment fallback of one
//! of that binary's flags, and each `STRATUS_*_FLAGS` value holds only flags it has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries the units may start, as Cargo built them for this test.
fn binaries() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("stratus-apiserver", env!("CARGO_BIN_EXE_stratus-apiserver")),
        ("stratus-controllers", env!("CARGO_BIN_EXE_stratus-controllers")),
        ("stratus-gateway", env!("CARGO_BIN_EXE_stratus-gateway")),
        ("stratus-agent", env!("CARGO_BIN_EXE_stratus-agent")),
    ])
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/deploy")
}

/// The value of `key=` in the unit's lines (the first one).
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The settings of an env file: `NAME=value` lines, and the `# NAME=value` lines that show an
/// optional one.
fn settings(env: &str) -> Vec<(String, String)> {
    env.lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('='))
        .filter(|(name, _)| name.starts_with("STRATUS_") && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn every_unit_starts_a_binary_with_settings_it_understands() {
    let binaries = binaries();
    let mut units: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert_eq!(units.len(), binaries.len(), "one unit per binary: {units:?}");
    for path in units {
        let unit = std::fs::read_to_string(&path).unwrap();
        let what = path.file_name().unwrap().to_string_lossy().to_string();
        let exec = directive(&unit, "ExecStart").unwrap_or_else(|| panic!("{what}: no ExecStart"));
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap();
        let name = Path::new(program).file_name().unwrap().to_str().unwrap();
        assert_eq!(program, format!("/usr/local/bin/{name}"), "{what}");
        let binary = binaries.get(name).unwrap_or_else(|| panic!("{what} starts {name}, not one of ours"));
        let help = Command::new(binary).arg("--help").output().unwrap();
        assert!(help.status.success(), "{name} --help");
        let help = String::from_utf8(help.stdout).unwrap();
        let has_flag = |flag: &str| help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"));

        let env_file = directive(&unit, "EnvironmentFile").unwrap_or_else(|| panic!("{what}: no EnvironmentFile"));
        let env_name = env_file.strip_prefix("/etc/stratus/").unwrap_or_else(|| panic!("{what}: {env_file}"));
        let env = std::fs::read_to_string(deploy_dir().join(env_name)).unwrap();
        let settings = settings(&env);
        // The flags variable the unit passes is defined, and holds flags of this binary only.
        let flags_var = words.next().and_then(|w| w.strip_prefix('$')).unwrap_or_else(|| panic!("{what}: {exec}"));
        assert!(settings.iter().any(|(n, _)| n == flags_var), "{env_name} does not set {flags_var}");
        for (setting, value) in &settings {
            if setting == flags_var {
                for flag in value.split_whitespace().filter(|w| w.starts_with("--")) {
                    assert!(has_flag(flag), "{env_name}: {name} has no flag {flag}");
                }
            } else {
                assert!(help.contains(&format!("[env: {setting}")), "{env_name}: {name} reads no {setting}");
            }
        }
    }
}
