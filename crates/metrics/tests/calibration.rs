//! log_loss and calibration_curve against scikit-learn 1.9.1 (fixtures from scripts/reference/gen_calibration.py).

#[allow(dead_code)]
mod common;

use finetune_metrics::calibration::{calibration_curve, log_loss, LogLossAccumulator};
use serde_json::{json, Value};

fn run(case: &Value) -> Result<Value, String> {
    let a = &case["args"];
    let r = match case["metric"].as_str().unwrap() {
        "log_loss" => {
            let y: Vec<usize> = serde_json::from_value(a["y_true"].clone()).unwrap();
            let p: Vec<Vec<f64>> = serde_json::from_value(a["y_pred"].clone()).unwrap();
            // streamed in uneven batches: must equal the one-shot call
            let mut acc = LogLossAccumulator::new();
            for (yc, pc) in y.chunks(37).zip(p.chunks(37)) {
                acc.update(yc, pc).map_err(|e| e.kind().to_string())?;
            }
            let one = log_loss(&y, &p).map_err(|e| e.kind().to_string())?;
            assert_eq!(acc.compute().unwrap().to_bits(), one.to_bits());
            json!(one)
        }
        "calibration_curve" => {
            let y: Vec<bool> = serde_json::from_value(a["y_true"].clone()).unwrap();
            let p: Vec<f64> = serde_json::from_value(a["y_prob"].clone()).unwrap();
            let c =
                calibration_curve(&y, &p, a["n_bins"].as_u64().unwrap() as usize).map_err(|e| e.kind().to_string())?;
            assert_eq!(c.count.iter().sum::<u64>(), y.len() as u64);
            json!({"prob_true": c.prob_true, "prob_pred": c.prob_pred})
        }
        m => panic!("unknown metric {m}"),
    };
    Ok(r)
}

#[test]
fn calibration_fixtures() {
    let f = common::load("calibration.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        match (run(case), case.get("error")) {
            (Ok(v), None) => {
                if let Some(d) = common::diff(&case["result"], &v, id) {
                    panic!("{d}");
                }
            }
            (Err(kind), Some(e)) => assert_eq!(kind, e["kind"].as_str().unwrap(), "{id}"),
            (Ok(v), Some(e)) => panic!("{id}: expected {e}, got {v}"),
            (Err(k), None) => panic!("{id}: unexpected {k}"),
        }
    }
}
