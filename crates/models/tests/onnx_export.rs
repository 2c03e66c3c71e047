//! ONNX export of the BERT-family classifiers, run by a real ONNX runtime (`tract-onnx`) on the tiny random
//! fixtures' inputs (padding included) and compared with the PyTorch/transformers logits stored with them
//! (scripts/reference/gen_tiny_encoders.py): BERT, RoBERTa and DistilBERT sequence classification, BERT token
//! classification.

use finetune_models::bert::{BertConfig, BertForSequenceClassification, Task};
use finetune_models::onnx::{decode, encode, export_bert, OPSET};
use tract_onnx::prelude::*;

mod common;
use common::{fixture, load};

/// Exports `dir` (with `task`), runs the file in tract on the fixture's inputs; returns the ONNX logits, the
/// transformers logits and the model.
fn run(dir: &str, task: Task) -> (Vec<f32>, Vec<f32>, BertForSequenceClassification) {
    let mut cfg = BertConfig::from_json(&std::fs::read_to_string(fixture(dir, "config.json")).unwrap()).unwrap();
    cfg.task = task;
    let weights = load(fixture(dir, "model.safetensors"));
    let (model, fresh) = BertForSequenceClassification::from_state_dict(cfg, &weights.f32s, 0).expect("loads");
    assert!(fresh.is_empty(), "{fresh:?}");
    let proto = export_bert(&model, &[("id2label".into(), "{}".into())]).expect("export");
    let bytes = encode(&proto);
    assert_eq!(decode(&bytes).expect("decodes"), proto);

    let expected = load(fixture(dir, "expected.safetensors"));
    let ids = &expected.i64s["input_ids"];
    let mask = &expected.i64s["attention_mask"];
    let b = expected.f32s["logits"].shape[0];
    let t = ids.len() / b;
    let tensor = |v: &[i64]| -> TValue {
        tract_ndarray::Array2::from_shape_vec((b, t), v.to_vec()).unwrap().into_tensor().into()
    };
    let mut inputs: TVec<TValue> = tvec![tensor(ids), tensor(mask)];
    let n_inputs = proto.graph.as_ref().unwrap().input.len();
    if n_inputs == 3 {
        let tt = expected.i64s.get("token_type_ids").cloned().unwrap_or_else(|| vec![0; ids.len()]);
        inputs.push(tensor(&tt));
    }
    let mut m = tract_onnx::onnx().model_for_read(&mut &bytes[..]).expect("tract reads the export");
    for i in 0..n_inputs {
        m = m.with_input_fact(i, i64::fact([b, t]).into()).unwrap();
    }
    let runnable = m.into_optimized().expect("optimizes").into_runnable().expect("runnable");
    let out = runnable.run(inputs).expect("runs");
    let got = out[0].to_array_view::<f32>().unwrap().iter().copied().collect();
    (got, expected.f32s["logits"].data.clone(), model)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn onnx_exports_give_transformers_logits_in_an_onnx_runtime() {
    for (dir, task) in [
        ("tiny_bert", Task::SequenceClassification),
        ("tiny_roberta", Task::SequenceClassification),
        ("tiny_distilbert", Task::SequenceClassification),
        ("tiny_bert_token", Task::TokenClassification),
    ] {
        let (got, want, _) = run(dir, task);
        let err = max_abs(&got, &want);
        println!("{dir}: {} logits, max |onnx - transformers| {err:.2e}", got.len());
        assert!(err <= 1e-4, "{dir}: {err}");
    }
}

#[test]
fn the_file_declares_opset_17_dynamic_axes_and_every_weight() {
    let (_, _, model) = run("tiny_bert", Task::SequenceClassification);
    let proto = export_bert(&model, &[]).unwrap();
    assert_eq!(proto.opset_import[0].version, OPSET);
    let g = proto.graph.unwrap();
    let names: Vec<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    assert_eq!(g.output[0].name, "logits");
    // Every parameter of the model is an initializer (the pooler included), with all its values.
    let init: std::collections::BTreeMap<&str, usize> =
        g.initializer.iter().map(|t| (t.name.as_str(), t.raw_data.len() / 4)).collect();
    for info in model.store.param_infos() {
        let n: usize = info.shape.iter().product();
        assert_eq!(init.get(info.name.as_str()), Some(&n), "{}", info.name);
    }
    // A masked-LM head is refused by name.
    let mut cfg = model.config.clone();
    cfg.task = Task::MaskedLM;
    let mlm = BertForSequenceClassification::random(cfg, 0).unwrap();
    let e = export_bert(&mlm, &[]).unwrap_err().to_string();
    assert!(e.contains("masked-LM"), "{e}");
}
