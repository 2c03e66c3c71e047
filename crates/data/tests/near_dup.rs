//! MinHash + LSH against datasketch 2.0.0 (fixture from scripts/reference/gen_near_dup.py): permutations drawn from
//! numpy's RandomState, signatures, the (bands, rows) choice for a threshold, and every candidate pair within a set
//! and across two sets, on 300 real SpamAssassin e-mails and 20 edited copies.

use finetune_data::near_dup::{
    jaccard_estimate, optimal_param, MinHasher, NearDupIndex, NearDupOptions, Scheme, Shingles,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/near_dup.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().expect("list").iter().map(|x| x.as_u64().expect("u64")).collect()
}

#[test]
fn permutations_match_datasketch() {
    let fx = fixture();
    for p in fx["permutations"].as_array().expect("permutations") {
        let scheme: Scheme = p["scheme"].as_str().expect("scheme").parse().expect("scheme");
        let h = MinHasher::new(
            p["num_perm"].as_u64().expect("n") as usize,
            p["seed"].as_u64().expect("seed") as u32,
            scheme,
        );
        assert_eq!(h.a, u64s(&p["a"]), "{scheme:?} a");
        assert_eq!(h.b, u64s(&p["b"]), "{scheme:?} b");
    }
}

#[test]
fn lsh_parameters_match_datasketch() {
    let fx = fixture();
    for p in fx["optimal_params"].as_array().expect("params") {
        let t = p["threshold"].as_f64().expect("t");
        let n = p["num_perm"].as_u64().expect("n") as usize;
        let want = (p["b"].as_u64().expect("b") as usize, p["r"].as_u64().expect("r") as usize);
        assert_eq!(optimal_param(t, n, 0.5, 0.5), want, "threshold {t}, num_perm {n}");
    }
}

#[test]
fn signatures_and_candidate_pairs_match_datasketch() {
    let fx = fixture();
    let texts: Vec<&str> = fx["texts"].as_array().expect("texts").iter().map(|t| t.as_str().expect("text")).collect();
    for c in fx["configs"].as_array().expect("configs") {
        let n = c["n"].as_u64().expect("n") as usize;
        let opts = NearDupOptions {
            shingles: if c["shingles"] == "words" { Shingles::Words(n) } else { Shingles::Chars(n) },
            threshold: c["threshold"].as_f64().expect("threshold"),
            num_perm: c["num_perm"].as_u64().expect("num_perm") as usize,
            seed: c["seed"].as_u64().expect("seed") as u32,
            scheme: c["scheme"].as_str().expect("scheme").parse().expect("scheme"),
        };
        let what = format!("{opts:?}");
        let idx = NearDupIndex::new(&texts, opts).expect("index");
        assert_eq!((idx.bands, idx.rows), (c["b"].as_u64().unwrap() as usize, c["r"].as_u64().unwrap() as usize));
        for (i, sig) in c["signatures"].as_object().expect("signatures") {
            let i: usize = i.parse().expect("index");
            assert_eq!(idx.signatures[i].as_deref(), Some(&u64s(sig)[..]), "{what}: signature of text {i}");
        }
        let want: Vec<(usize, usize)> = c["candidate_pairs"]
            .as_array()
            .expect("pairs")
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(idx.candidate_pairs(), want, "{what}: candidate pairs");
        for j in c["jaccard"].as_array().expect("jaccard") {
            let (a, b) = (j[0].as_u64().unwrap() as usize, j[1].as_u64().unwrap() as usize);
            let got = jaccard_estimate(idx.signatures[a].as_deref().unwrap(), idx.signatures[b].as_deref().unwrap());
            assert_eq!(got, j[2].as_f64().unwrap(), "{what}: jaccard of {a}, {b}");
        }
        // Across sets: the first 200 indexed, the rest queried.
        let first = NearDupIndex::new(&texts[..200], opts).expect("index");
        let sigs_rest: Vec<&str> = texts[200..].to_vec();
        let tables_hits: Vec<(usize, Vec<usize>)> = {
            let mut out = Vec::new();
            for (k, t) in sigs_rest.iter().enumerate() {
                let Some(sig) = first.signature(t) else { continue };
                let hits = first.candidates(&sig);
                if !hits.is_empty() {
                    out.push((200 + k, hits));
                }
            }
            out
        };
        let want_across: Vec<(usize, Vec<usize>)> = c["across"]
            .as_object()
            .expect("across")
            .iter()
            .map(|(k, v)| {
                (k.parse().unwrap(), v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect())
            })
            .collect();
        let mut want_across = want_across;
        want_across.sort();
        assert_eq!(tables_hits, want_across, "{what}: across");
    }
}
