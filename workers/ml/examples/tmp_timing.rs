// Throwaway timing program: deleted after measuring.
use serde_json::{json, Map};
use sluice_ml::learn::*;
use std::io::Write;

fn main() {
    let (n, d) = (10_000, 20);
    let mut s: u64 = 12345;
    let mut u = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut normal = move || (-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos();
    let w: Vec<f64> = (0..d).map(|_| normal()).collect();
    let mut x = Vec::new();
    let mut z = Vec::new();
    for _ in 0..n {
        let row: Vec<f64> = (0..d).map(|_| normal()).collect();
        let t: f64 = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + 0.5 * normal();
        x.push(row);
        z.push(t);
    }
    let only: Vec<Algorithm> = std::env::var("ALGS")
        .ok()
        .map(|s| s.split(',').filter_map(Algorithm::parse).collect())
        .unwrap_or_else(|| Algorithm::ALL.to_vec());
    let tasks = std::env::var("TASKS").unwrap_or("classification,regression".into());
    for classify in [true, false] {
        if !tasks.contains(if classify { "classification" } else { "regression" }) {
            continue;
        }
        let y: Vec<serde_json::Value> = z
            .iter()
            .map(|&t| if classify { json!(i64::from(t > 0.0)) } else { json!(t) })
            .collect();
        let path = format!("/tmp/timing_{}.csv", if classify { "c" } else { "r" });
        let mut f = std::fs::File::create(&path).unwrap();
        let header: Vec<String> = (0..d).map(|i| format!("x{i}")).collect();
        writeln!(f, "{},y", header.join(",")).unwrap();
        for (row, t) in x.iter().zip(&y) {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(f, "{},{}", cells.join(","), t).unwrap();
        }
        let text = json!({"X": x, "y": y}).to_string();
        let task = if classify { Task::Classification } else { Task::Regression };
        for &a in &only {
            let applicable = match a {
                Algorithm::LinearRegression => !classify,
                Algorithm::LogisticRegression | Algorithm::NaiveBayes => classify,
                _ => true,
            };
            if !applicable {
                continue;
            }
            match train(&TrainSpec { algorithm: a, task: Some(task), params: &Map::new(), data: &text }) {
                Ok(tr) => println!(
                    "FIT {} {} fit_ms {} metric {:.4} {}",
                    task.as_str(),
                    a.as_str(),
                    tr.report.fit_ms,
                    tr.report.metric.value,
                    tr.report.leaderboard.map(|l| serde_json::to_string(&l).unwrap()).unwrap_or_default()
                ),
                Err(e) => println!("FIT {} {} ERROR {e}", task.as_str(), a.as_str()),
            }
        }
    }
}
