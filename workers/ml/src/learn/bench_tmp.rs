//! Temporary timing program (not to be committed).
use std::io::Write;
use std::time::Instant;

use serde_json::{json, Map};

use super::*;

fn data(n: usize, d: usize, classify: bool) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut s: u64 = 12345;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let w: Vec<f64> = (0..d).map(|_| next()).collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let row: Vec<f64> = (0..d).map(|_| (next() * 1000.0).round() / 1000.0).collect();
        let z: f64 = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>()
            + 0.3 * (row[0] * 3.0).sin()
            + 0.1 * next();
        y.push(if classify {
            f64::from(u8::from(z > 0.0))
        } else {
            (z * 1000.0).round() / 1000.0
        });
        x.push(row);
    }
    (x, y)
}

#[test]
#[ignore]
fn timing() {
    let (n, d) = (10_000, 20);
    for classify in [true, false] {
        let (x, y) = data(n, d, classify);
        let path = format!("/tmp/bench_{}.csv", if classify { "c" } else { "r" });
        let mut f = std::fs::File::create(&path).unwrap();
        let header: Vec<String> = (0..d).map(|i| format!("x{i}")).collect();
        writeln!(f, "{},y", header.join(",")).unwrap();
        for (row, t) in x.iter().zip(&y) {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            if classify {
                writeln!(f, "{},{}", cells.join(","), *t as i64).unwrap();
            } else {
                writeln!(f, "{},{}", cells.join(","), t).unwrap();
            }
        }
        let ys: Vec<serde_json::Value> = y
            .iter()
            .map(|v| if classify { json!(*v as i64) } else { json!(v) })
            .collect();
        let text = json!({"X": x, "y": ys}).to_string();
        let only: Vec<Algorithm> = std::env::var("ALGS")
            .ok()
            .map(|s| s.split(',').filter_map(Algorithm::parse).collect())
            .unwrap_or_else(|| Algorithm::ALL.to_vec());
        let task = if classify {
            Task::Classification
        } else {
            Task::Regression
        };
        for a in only {
            let applicable = match a {
                Algorithm::LinearRegression => !classify,
                Algorithm::LogisticRegression | Algorithm::NaiveBayes => classify,
                _ => true,
            };
            if !applicable {
                continue;
            }
            let t = Instant::now();
            let r = train(&TrainSpec {
                algorithm: a,
                task: Some(task),
                params: &Map::new(),
                data: &text,
            });
            let secs = t.elapsed().as_secs_f64();
            match r {
                Ok(tr) => println!(
                    "FIT {} {} {:.3}s metric {:.4} {}",
                    task.as_str(),
                    a.as_str(),
                    secs,
                    tr.report.metric.value,
                    tr.report
                        .leaderboard
                        .map(|l| serde_json::to_string(&l).unwrap())
                        .unwrap_or_default()
                ),
                Err(e) => println!("FIT {} {} ERROR {e}", task.as_str(), a.as_str()),
            }
        }
    }
    // Predict rates, linear model, matrix of 20 features.
    let (x, y) = data(1000, 20, false);
    let model = train(&TrainSpec {
        algorithm: Algorithm::LinearRegression,
        task: None,
        params: &Map::new(),
        data: &json!({"X": x, "y": y}).to_string(),
    })
    .unwrap()
    .model;
    let (px, _) = data(100_000, 20, false);
    let request = json!({"X": px}).to_string();
    let t = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        let e = model.encode(&request).unwrap();
        let p = model.predict(&e).unwrap();
        assert_eq!(p.len(), 100_000);
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "PREDICT matrix20 linear: {:.0} rows/s ({} bytes/row)",
        reps as f64 * 100_000.0 / s,
        request.len() / 100_000
    );
    // Records of 16 fields: 8 numeric, 4 categorical, 4 boolean.
    let mk = |i: usize| {
        let mut r = serde_json::Map::new();
        for k in 0..8 {
            r.insert(
                format!("num{k}"),
                json!(((i * 7 + k * 13) % 1000) as f64 / 10.0),
            );
        }
        for k in 0..4 {
            r.insert(
                format!("cat{k}"),
                json!(["SP", "RJ", "MG", "BA", "PR", "RS"][(i + k) % 6]),
            );
        }
        for k in 0..4 {
            r.insert(format!("flag{k}"), json!((i + k) % 3 == 0));
        }
        r.insert("sold".into(), json!(((i * 31) % 97) as f64));
        serde_json::Value::Object(r)
    };
    let train_records: Vec<_> = (0..2000).map(mk).collect();
    for a in [Algorithm::LinearRegression, Algorithm::LogisticRegression] {
        let mut recs = train_records.clone();
        if a == Algorithm::LogisticRegression {
            for (i, r) in recs.iter_mut().enumerate() {
                r["sold"] = json!(i % 2 == 0);
            }
        }
        let model = train(&TrainSpec {
            algorithm: a,
            task: None,
            params: &Map::new(),
            data: &json!({"records": recs, "target": "sold"}).to_string(),
        })
        .unwrap()
        .model;
        let mut reqs: Vec<_> = (0..100_000).map(mk).collect();
        for r in &mut reqs {
            r.as_object_mut().unwrap().remove("sold");
        }
        let request = json!({"records": reqs}).to_string();
        let t = Instant::now();
        for _ in 0..reps {
            let e = model.encode(&request).unwrap();
            let p = model.predict(&e).unwrap();
            assert_eq!(p.len(), 100_000);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "PREDICT records16 {}: {:.0} rows/s ({} bytes/row)",
            a.as_str(),
            reps as f64 * 100_000.0 / s,
            request.len() / 100_000
        );
    }
}
