//! What a run measured, kept for the charts: each server's run writes its figures to
//! `target/bench/<server>.tsv` (section, series, x, value per line), and `charts` draws from
//! every file there, so one chart can set the three servers side by side.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where results and charts go (BENCH_OUT, default `target/bench`).
pub fn out_dir() -> PathBuf {
    std::env::var("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench"))
}

static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Start this server's results file afresh; `server` names it ("Redis 7.0.15").
pub fn begin(server: &str) {
    let dir = out_dir();
    fs::create_dir_all(&dir).unwrap();
    let name = server.replace(' ', "-").to_lowercase();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join(format!("{name}.tsv")))
        .unwrap();
    let mut f = FILE.lock().unwrap();
    *f = Some(file);
    drop(f);
    record("server", server, "", 0.0);
}

/// One figure: `section` (what was measured), `series` (who), `x` (at what), `value`.
pub fn record(section: &str, series: &str, x: &str, value: f64) {
    if let Some(f) = FILE.lock().unwrap().as_mut() {
        writeln!(f, "{section}\t{series}\t{x}\t{value}").unwrap();
    }
}

/// Every results file in the output directory: (server, rows of section, series, x, value).
pub type Rows = Vec<(String, String, String, f64)>;

pub fn load_all() -> Vec<(String, Rows)> {
    let mut all = Vec::new();
    let Ok(entries) = fs::read_dir(out_dir()) else {
        return all;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
        .collect();
    paths.sort();
    for path in paths {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut server = String::new();
        let mut rows = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 4 {
                continue;
            }
            if f[0] == "server" {
                server = f[1].to_string();
                continue;
            }
            let value = f[3].parse().unwrap_or(f64::NAN);
            rows.push((f[0].to_string(), f[1].to_string(), f[2].to_string(), value));
        }
        all.push((server, rows));
    }
    all
}
