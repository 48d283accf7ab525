//! Replays every input kept in `fuzz/regressions/<target>/` (inputs that
//! once crashed a fuzz target, kept after the fix) and the seeds in
//! `fuzz/seeds/<target>/` through the fuzz targets' own bodies, so every
//! test run checks them without a fuzzer.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

#[test]
fn fuzz_inputs_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (name, target) in targets::TARGETS {
        for folder in ["regressions", "seeds"] {
            let dir = root.join(folder).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.expect("readable fuzz folder").path();
                let data = std::fs::read(&path).expect("readable fuzz input");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} panics on {}", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 4, "expected the seeds at least, replayed {replayed} inputs");
}
