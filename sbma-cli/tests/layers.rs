//! The layer rule of docs/architecture.md: every sbma dependency of every
//! workspace crate points down.

use std::path::Path;

/// Crate directory, package name, rank. A crate may depend only on crates
/// of a lower rank (a crate may name itself as a dev-dependency to enable
/// its own features).
const LAYERS: &[(&str, &str, u32)] = &[
    ("sbma-core", "sbma-core", 0),
    ("sbma-pager", "sbma-pager", 1),
    ("sbma-alloc", "sbma-alloc", 2),
    ("sbma-ffi", "sbma-ffi", 3),
    ("sbma-interpose", "sbma-interpose", 4),
    ("sbma-cli", "sbma-cli", 5),
    ("benches", "sbma-benches", 6),
];

fn rank(name: &str) -> Option<u32> {
    LAYERS.iter().find(|l| l.1 == name).map(|l| l.2)
}

/// The sbma crates named in the dependency tables of a manifest.
fn sbma_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.ends_with("dependencies]");
            continue;
        }
        if in_deps && line.starts_with("sbma") {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn dependencies_point_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut checked = 0;
    for &(dir, name, r) in LAYERS {
        assert!(
            workspace.contains(&format!("\"{dir}\"")),
            "{dir} is not a workspace member"
        );
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{dir}/Cargo.toml is not {name}"
        );
        for dep in sbma_dependencies(&manifest) {
            let d = rank(&dep).unwrap_or_else(|| panic!("{name} depends on unknown crate {dep}"));
            assert!(
                d < r || dep == name,
                "{name} (layer {r}) depends on {dep} (layer {d}): dependencies must point down"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "only {checked} dependencies found: is the parser still right?"
    );
}

#[test]
fn the_parser_sees_upward_edges() {
    let m = "[package]\nname = \"x\"\n[dependencies]\nsbma-alloc.workspace = true\nlibc = \"0.2\"\n\
             [target.'cfg(unix)'.dev-dependencies]\nsbma-cli = { path = \"..\" }\n[features]\nsbma-x = []\n";
    assert_eq!(sbma_dependencies(m), ["sbma-alloc", "sbma-cli"]);
}
