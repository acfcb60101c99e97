//! Builds the web UI (`ui/` → `ui/dist`, which `src/ui.rs` serves and release builds embed)
//! when `ui/dist` is missing or older than the UI's sources, so a fresh clone's
//! `cargo run --release -p dagg-node -- serve` serves a built UI.
//!
//! Runs `npm ci` (when `node_modules` is missing or older than `package-lock.json`) and
//! `npm run build` in `ui/`. Without npm, or when the build fails, the crate still compiles
//! (with a warning) and `/ui/` answers that the UI was not built. `DAGG_SKIP_UI_BUILD=1`
//! skips all of this.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const SOURCES: &[&str] = &["package.json", "package-lock.json", "index.html", "vite.config.ts", "tsconfig.json", "src"];

fn main() {
    let started = SystemTime::now();
    println!("cargo:rerun-if-env-changed=DAGG_SKIP_UI_BUILD");
    let ui = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("../ui");
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", ui.join(s).display());
    }
    // `ui/dist/index.html` too (a deleted or hand-built UI reruns this), but this script writes
    // it: a file newer than the build would make cargo rerun the script and rebuild the crate
    // at every later build with nothing changed. So a build made here is dated just before
    // this run began (see `npm_build`). A release build embeds `ui/dist` through
    // `include_bytes!`, which rustc tracks by itself.
    println!("cargo:rerun-if-changed={}", ui.join("dist/index.html").display());
    if std::env::var("DAGG_SKIP_UI_BUILD").is_ok_and(|v| !v.is_empty() && v != "0") || !ui.join("package.json").exists() {
        return;
    }
    let built = modified(&ui.join("dist/index.html"));
    let newest_source = SOURCES.iter().filter_map(|s| newest(&ui.join(s))).max();
    if built.is_some() && built >= newest_source {
        return;
    }
    if Command::new("npm").arg("--version").output().is_err() {
        println!("cargo:warning=the web UI is not built and npm is not on the PATH: /ui/ will say so (run `npm ci && npm run build` in ui/)");
        return;
    }
    let lock = modified(&ui.join("package-lock.json"));
    let modules = modified(&ui.join("node_modules/.package-lock.json"));
    if (modules.is_none() || modules < lock) && !npm(&ui, &["ci", "--no-audit", "--no-fund"]) {
        return;
    }
    if npm(&ui, &["run", "build"]) {
        let before = started - std::time::Duration::from_secs(2);
        let dated = std::fs::File::options().write(true).open(ui.join("dist/index.html")).and_then(|f| f.set_modified(before));
        if let Err(e) = dated {
            println!("cargo:warning=cannot date ui/dist/index.html before this build ({e}): the next build will run this script again");
        }
    }
}

fn npm(dir: &Path, args: &[&str]) -> bool {
    match Command::new("npm").args(args).current_dir(dir).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let out = String::from_utf8_lossy(&o.stdout);
            let tail: Vec<&str> = out.lines().chain(err.lines()).rev().take(8).collect();
            println!("cargo:warning=`npm {}` in ui/ failed: {}", args.join(" "), tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
            false
        }
        Err(e) => {
            println!("cargo:warning=cannot run npm in ui/: {e}");
            false
        }
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of anything under a folder.
fn newest(p: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(p).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(p).ok()?.filter_map(Result::ok).filter_map(|e| newest(&e.path())).max()
}
