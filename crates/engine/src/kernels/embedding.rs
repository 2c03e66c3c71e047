//! BERT embeddings before their LayerNorm: `out[i] = word[ids[i]] + position[pos[i]] + token_type[tt[i]]`.
//! Ids are checked by the caller (model) against the table sizes; out-of-range ids panic here.

use crate::math::for_each_row;

#[allow(clippy::too_many_arguments)]
pub fn forward(
    out: &mut [f32],
    ids: &[u32],
    position_ids: &[u32],
    token_type_ids: Option<&[u32]>,
    word: &[f32],
    position: &[f32],
    token_type: Option<&[f32]>,
    c: usize,
) {
    let _prof = crate::profile::scope("embedding.forward");
    let n = ids.len();
    for_each_row(&mut out[..n * c], c, |i, o| {
        let w = &word[ids[i] as usize * c..][..c];
        let p = &position[position_ids[i] as usize * c..][..c];
        match (token_type_ids, token_type) {
            (Some(tt), Some(table)) => {
                let t = &table[tt[i] as usize * c..][..c];
                for k in 0..c {
                    o[k] = w[k] + p[k] + t[k];
                }
            }
            _ => {
                for k in 0..c {
                    o[k] = w[k] + p[k];
                }
            }
        }
    });
}

/// Scatter-adds `dout` rows into the tables' gradients (accumulated).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dword: &mut [f32],
    dposition: &mut [f32],
    dtoken_type: Option<&mut [f32]>,
    dout: &[f32],
    ids: &[u32],
    position_ids: &[u32],
    token_type_ids: Option<&[u32]>,
    c: usize,
) {
    let _prof = crate::profile::scope("embedding.backward");
    let add = |table: &mut [f32], row: usize, g: &[f32]| {
        for (t, v) in table[row * c..][..c].iter_mut().zip(g) {
            *t += v;
        }
    };
    // Word rows repeat across tokens, so the scatter is serial; it is O(n·c) and small next to the matmuls.
    rayon::join(
        || {
            for (i, g) in dout.chunks_exact(c).take(ids.len()).enumerate() {
                add(dword, ids[i] as usize, g);
            }
        },
        || {
            let mut dtt = dtoken_type;
            for (i, g) in dout.chunks_exact(c).take(ids.len()).enumerate() {
                add(dposition, position_ids[i] as usize, g);
                if let (Some(t), Some(tt)) = (dtt.as_deref_mut(), token_type_ids) {
                    add(t, tt[i] as usize, g);
                }
            }
        },
    );
}

pub mod reference {
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        out: &mut [f32],
        ids: &[u32],
        position_ids: &[u32],
        token_type_ids: Option<&[u32]>,
        word: &[f32],
        position: &[f32],
        token_type: Option<&[f32]>,
        c: usize,
    ) {
        for i in 0..ids.len() {
            for k in 0..c {
                let mut v = word[ids[i] as usize * c + k] + position[position_ids[i] as usize * c + k];
                if let (Some(tt), Some(t)) = (token_type_ids, token_type) {
                    v += t[tt[i] as usize * c + k];
                }
                out[i * c + k] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn forward_and_scatter_backward() {
        let (v, p, nt, c) = (11, 7, 2, 5);
        let word = rand_vec(v * c, 1);
        let pos = rand_vec(p * c, 2);
        let tt = rand_vec(nt * c, 3);
        let ids = [3u32, 3, 0, 10, 3, 5];
        let pids = [0u32, 1, 2, 0, 1, 2];
        let tids = [0u32, 1, 1, 0, 0, 1];
        let (mut o, mut r) = (vec![0.0; 6 * c], vec![0.0; 6 * c]);
        forward(&mut o, &ids, &pids, Some(&tids), &word, &pos, Some(&tt), c);
        reference::forward(&mut r, &ids, &pids, Some(&tids), &word, &pos, Some(&tt), c);
        assert_eq!(o, r);
        let dout = rand_vec(6 * c, 4);
        let (mut dw, mut dp, mut dt) = (vec![0.0; v * c], vec![0.0; p * c], vec![0.0; nt * c]);
        backward(&mut dw, &mut dp, Some(&mut dt), &dout, &ids, &pids, Some(&tids), c);
        check_fd(&word, &dw, 1e-2, 1e-3, "fd word", |ws| {
            let mut o = vec![0.0; 6 * c];
            reference::forward(&mut o, &ids, &pids, Some(&tids), ws, &pos, Some(&tt), c);
            weighted(&o, &dout)
        });
        check_fd(&tt, &dt, 1e-2, 1e-3, "fd token type", |ts| {
            let mut o = vec![0.0; 6 * c];
            reference::forward(&mut o, &ids, &pids, Some(&tids), &word, &pos, Some(ts), c);
            weighted(&o, &dout)
        });
        check_fd(&pos, &dp, 1e-2, 1e-3, "fd position", |ps| {
            let mut o = vec![0.0; 6 * c];
            reference::forward(&mut o, &ids, &pids, Some(&tids), &word, ps, Some(&tt), c);
            weighted(&o, &dout)
        });
    }
}
