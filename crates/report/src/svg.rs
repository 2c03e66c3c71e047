//! Plots as inline SVG. Colours come from CSS custom properties of the page (`--fg`, `--grid`, `--c0`…`--c7`),
//! so one SVG reads in light and dark mode and prints; every text is escaped.

use std::fmt::Write;

/// Escapes text for HTML/SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Number of series colours the page defines (`--c0` … `--c7`).
pub const PALETTE: usize = 8;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;

/// A named sequence of points.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers at the points (few points, e.g. one per evaluation).
    pub markers: bool,
    /// Markers only, no line between them (a scatter plot).
    pub scatter: bool,
}

/// A line chart's axes and decorations.
#[derive(Debug, Clone, Default)]
pub struct LineOptions {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Fixed ranges (e.g. [0, 1] for ROC); otherwise from the data.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// A dashed reference line from (x0, y0) to (x1, y1) in data coordinates (the chance line of a ROC
    /// curve, the diagonal of a calibration plot).
    pub reference: Option<((f64, f64), (f64, f64))>,
    /// Step interpolation, "steps-post" (precision-recall curves are drawn so, as sklearn's display does).
    pub steps: bool,
    /// Where the legend goes (away from where the curves usually are).
    pub legend: Corner,
}

/// A corner of the plot area.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Corner {
    #[default]
    TopRight,
    BottomRight,
    BottomLeft,
}

/// "Nice" tick values covering [lo, hi] (1, 2, 5 × 10^k steps).
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    // Index-based and rounded to the step's decimals, so ticks read 0.6 rather than 0.6000000000000001.
    let digits = (-step.log10().floor()).max(0.0) as usize;
    let round = |v: f64| format!("{v:.digits$}").parse::<f64>().unwrap_or(v);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| round(i as f64 * step)).map(|v| if v == 0.0 { 0.0 } else { v }).collect()
}

/// A compact label for a tick or a value: at most 4 significant digits, exponent form for tiny/huge values.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Labels of an axis's ticks: [`fmt_num`]'s, unless two ticks would read the same (1e-4 and 1.5e-4 at four
/// decimals); then scientific notation with as many digits as tell them apart.
pub fn tick_labels(ts: &[f64]) -> Vec<String> {
    let distinct = |l: &[String]| l.iter().enumerate().all(|(i, a)| l[..i].iter().all(|b| a != b));
    let plain: Vec<String> = ts.iter().map(|&t| fmt_num(t)).collect();
    if distinct(&plain) {
        return plain;
    }
    for p in 1..=8 {
        let l: Vec<String> = ts.iter().map(|&t| if t == 0.0 { "0".into() } else { format!("{t:.p$e}") }).collect();
        if distinct(&l) {
            return l;
        }
    }
    plain
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        return Some((lo - pad, hi + pad));
    }
    let pad = (hi - lo) * 0.04;
    Some((lo - pad, hi + pad))
}

fn open(out: &mut String, title: &str, kind: &str) {
    let _ = write!(
        out,
        r#"<svg class="plot {kind}" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><text class="title" x="{x}" y="20" text-anchor="middle">{t}</text>"#,
        t = escape(title),
        x = W / 2.0,
    );
}

fn axes(out: &mut String, xr: (f64, f64), yr: (f64, f64), x_label: &str, y_label: &str) {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - xr.0) / (xr.1 - xr.0) * pw;
    let sy = |y: f64| TOP + ph - (y - yr.0) / (yr.1 - yr.0) * ph;
    let yt = ticks(yr.0, yr.1, 5);
    for (t, l) in yt.iter().copied().zip(tick_labels(&yt)) {
        let y = sy(t);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"#,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
        );
    }
    let xt = ticks(xr.0, xr.1, 6);
    for (t, l) in xt.iter().copied().zip(tick_labels(&xt)) {
        let x = sx(t);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y2}"/><text class="tick" x="{x:.1}" y="{ty}" text-anchor="middle">{l}</text>"#,
            y2 = TOP + ph,
            ty = TOP + ph + 16.0,
        );
    }
    let _ = write!(
        out,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/><text class="axis" x="{cx}" y="{by}" text-anchor="middle">{xl}</text><text class="axis" transform="translate(14 {cy}) rotate(-90)" text-anchor="middle">{yl}</text>"#,
        cx = LEFT + pw / 2.0,
        by = H - 8.0,
        cy = TOP + ph / 2.0,
        xl = escape(x_label),
        yl = escape(y_label),
    );
}

fn legend(out: &mut String, names: &[(usize, String)], corner: Corner) {
    // Top-right inside the plot area, one line per series, on a translucent background.
    if names.is_empty() {
        return;
    }
    let longest = names.iter().map(|(_, n)| n.chars().count()).max().unwrap_or(0).min(48);
    let w = 30.0 + longest as f64 * 6.6;
    let h = 8.0 + names.len() as f64 * 16.0;
    let x0 = if corner == Corner::BottomLeft { LEFT + 6.0 } else { W - RIGHT - w - 6.0 };
    let y0 = if corner == Corner::TopRight { TOP + 6.0 } else { H - BOTTOM - h - 6.0 };
    let _ = write!(out, r#"<g class="legend"><rect x="{x0:.1}" y="{y0}" width="{w:.1}" height="{h}" rx="3"/>"#);
    for (i, (c, n)) in names.iter().enumerate() {
        let y = y0 + 14.0 + i as f64 * 16.0;
        let short: String = n.chars().take(48).collect();
        let _ = write!(
            out,
            r#"<line class="s{c}" x1="{a:.1}" x2="{b:.1}" y1="{l:.1}" y2="{l:.1}"/><text x="{t:.1}" y="{y:.1}">{n}</text>"#,
            a = x0 + 6.0,
            b = x0 + 22.0,
            l = y - 4.0,
            t = x0 + 26.0,
            n = escape(&short)
        );
    }
    out.push_str("</g>");
}

/// A line chart of several series on shared axes; series `i` takes colour `i % PALETTE`. Non-finite points
/// are skipped. A chart without any finite point says so instead of drawing empty axes.
pub fn line_chart(series: &[Series], o: &LineOptions) -> String {
    let mut out = String::new();
    open(&mut out, &o.title, "line");
    let pts = || series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let xr = o.x_range.or_else(|| range(pts().map(|p| p.0)));
    let yr = o.y_range.or_else(|| range(pts().map(|p| p.1)));
    let (Some(xr), Some(yr)) = (xr, yr) else {
        let _ = write!(
            out,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return out;
    };
    axes(&mut out, xr, yr, &o.x_label, &o.y_label);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - xr.0) / (xr.1 - xr.0) * pw;
    let sy = |y: f64| TOP + ph - (y - yr.0) / (yr.1 - yr.0) * ph;
    if let Some(((x0, y0), (x1, y1))) = o.reference {
        let _ = write!(
            out,
            r#"<line class="ref" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
            sx(x0),
            sy(y0),
            sx(x1),
            sy(y1)
        );
    }
    let _ = write!(out, "<g>");
    for (i, s) in series.iter().enumerate() {
        let c = i % PALETTE;
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if pts.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (j, &(x, y)) in pts.iter().enumerate() {
            if j == 0 {
                let _ = write!(d, "M{:.2} {:.2}", sx(x), sy(y));
            } else if o.steps {
                let _ = write!(d, "H{:.2}V{:.2}", sx(x), sy(y));
            } else {
                let _ = write!(d, "L{:.2} {:.2}", sx(x), sy(y));
            }
        }
        if !s.scatter {
            let _ = write!(out, r#"<path class="s{c}" d="{d}"><title>{}</title></path>"#, escape(&s.name));
        }
        if s.markers || s.scatter || pts.len() == 1 {
            for &(x, y) in &pts {
                let _ = write!(
                    out,
                    r#"<circle class="m{c}" cx="{:.2}" cy="{:.2}" r="3"><title>{}: {} at {}</title></circle>"#,
                    sx(x),
                    sy(y),
                    escape(&s.name),
                    fmt_num(y),
                    fmt_num(x)
                );
            }
        }
    }
    out.push_str("</g>");
    let names: Vec<(usize, String)> = series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.name.is_empty())
        .map(|(i, s)| (i % PALETTE, s.name.clone()))
        .collect();
    if names.len() > 1 || series.len() == 1 && !names.is_empty() {
        legend(&mut out, &names, o.legend);
    }
    out.push_str("</svg>");
    out
}

/// Grouped vertical bars: one group per category, one bar per named group of values (e.g. precision, recall,
/// F1 per class). Values are drawn from 0 to `y_max` (default: the largest value).
pub fn bar_chart(title: &str, categories: &[String], groups: &[(String, Vec<f64>)], y_max: Option<f64>) -> String {
    let mut out = String::new();
    open(&mut out, title, "bars");
    // Head room above the tallest bar for the legend of several groups.
    let room = if groups.len() > 1 { 1.0 + 0.06 * (groups.len() as f64 + 1.0) } else { 1.05 };
    let max = y_max.unwrap_or_else(|| {
        groups.iter().flat_map(|g| g.1.iter()).copied().filter(|v| v.is_finite()).fold(0.0, f64::max).max(1e-12) * room
    });
    if categories.is_empty() || groups.is_empty() {
        let _ = write!(
            out,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    let pw = W - LEFT - RIGHT;
    let slot = pw / categories.len() as f64;
    let rotate = categories.len() > 8 || categories.iter().any(|c| c.chars().count() as f64 * 6.5 > slot);
    // Rotated labels (up to 18 characters) need the room their slant takes below the plot.
    let longest = categories.iter().map(|c| c.chars().count().min(18)).max().unwrap_or(0) as f64;
    let bottom = if rotate { BOTTOM.max(18.0 + longest * 6.5 * 0.574) } else { BOTTOM };
    let ph = H - TOP - bottom;
    let bt = ticks(0.0, max, 5);
    for (t, l) in bt.iter().copied().zip(tick_labels(&bt)) {
        let y = TOP + ph - t / max * ph;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"#,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
        );
    }
    let bw = (slot * 0.8) / groups.len() as f64;
    for (ci, cat) in categories.iter().enumerate() {
        let x0 = LEFT + ci as f64 * slot + slot * 0.1;
        for (gi, (gname, vals)) in groups.iter().enumerate() {
            let v = vals.get(ci).copied().unwrap_or(f64::NAN);
            if !v.is_finite() {
                continue;
            }
            let h = (v.max(0.0) / max).min(1.0) * ph;
            let _ = write!(
                out,
                r#"<rect class="b{c}" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}"><title>{cat} {g}: {v}</title></rect>"#,
                c = gi % PALETTE,
                x = x0 + gi as f64 * bw,
                y = TOP + ph - h,
                w = (bw - 1.0).max(0.5),
                cat = escape(cat),
                g = escape(gname),
                v = fmt_num(v)
            );
        }
        let cx = x0 + slot * 0.4;
        let short: String = cat.chars().take(18).collect();
        if rotate {
            let _ = write!(
                out,
                r#"<text class="tick" transform="translate({cx:.1} {y:.1}) rotate(-35)" text-anchor="end">{l}</text>"#,
                y = TOP + ph + 12.0,
                l = escape(&short)
            );
        } else {
            let _ = write!(
                out,
                r#"<text class="tick" x="{cx:.1}" y="{y:.1}" text-anchor="middle">{l}</text>"#,
                y = TOP + ph + 16.0,
                l = escape(&short)
            );
        }
    }
    let _ = write!(out, r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>"#);
    if groups.len() > 1 {
        let names: Vec<(usize, String)> = groups.iter().enumerate().map(|(i, g)| (i % PALETTE, g.0.clone())).collect();
        legend(&mut out, &names, Corner::TopRight);
    }
    out.push_str("</svg>");
    out
}

/// A confusion matrix as a heat map: rows are gold labels, columns predictions. Cell shade is the value over
/// the matrix maximum (normalised matrices: over 1); each cell prints its value.
pub fn heatmap(title: &str, labels: &[String], m: &[Vec<f64>], normalised: bool) -> String {
    let mut out = String::new();
    let k = labels.len().max(m.len());
    // The same width as the other plots, so that all render at one scale; the matrix is centred.
    let side = (40.0 * k as f64).clamp(240.0, 520.0);
    let cell = side / k.max(1) as f64;
    let left = ((W - side) / 2.0).max(110.0);
    let top = 40.0;
    let w = W;
    let h = top + side + 64.0;
    let _ = write!(
        out,
        r#"<svg class="plot heat" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><text class="title" x="{x:.1}" y="20" text-anchor="middle">{t}</text>"#,
        t = escape(title),
        x = w / 2.0
    );
    let max = if normalised {
        1.0
    } else {
        m.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0, f64::max).max(1e-12)
    };
    let font = (cell * 0.32).clamp(6.0, 13.0);
    for (i, row) in m.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let frac = if v.is_finite() { (v / max).clamp(0.0, 1.0) } else { 0.0 };
            let x = left + j as f64 * cell;
            let y = top + i as f64 * cell;
            let txt = if normalised { format!("{v:.2}") } else { fmt_num(v) };
            let _ = write!(
                out,
                r#"<rect class="cell" x="{x:.2}" y="{y:.2}" width="{cell:.2}" height="{cell:.2}" fill-opacity="{o:.3}"><title>gold {g}, predicted {p}: {txt}</title></rect>"#,
                o = 0.06 + 0.94 * frac,
                g = escape(labels.get(i).map_or("", String::as_str)),
                p = escape(labels.get(j).map_or("", String::as_str)),
            );
            if k <= 30 {
                let _ = write!(
                    out,
                    r#"<text class="{cls}" x="{cx:.2}" y="{cy:.2}" text-anchor="middle" font-size="{font:.1}">{txt}</text>"#,
                    cls = if frac > 0.55 { "cv hi" } else { "cv" },
                    cx = x + cell / 2.0,
                    cy = y + cell / 2.0 + font * 0.35,
                );
            }
        }
    }
    for (i, l) in labels.iter().enumerate() {
        let short: String = l.chars().take(16).collect();
        let _ = write!(
            out,
            r#"<text class="tick" x="{x:.1}" y="{y:.1}" text-anchor="end">{l}</text><text class="tick" transform="translate({cx:.1} {by:.1}) rotate(-35)" text-anchor="end">{l}</text>"#,
            x = left - 6.0,
            y = top + (i as f64 + 0.5) * cell + 4.0,
            cx = left + (i as f64 + 0.5) * cell,
            by = top + side + 12.0,
            l = escape(&short)
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{cx:.1}" y="{by:.1}" text-anchor="middle">predicted</text><text class="axis" transform="translate(14 {cy:.1}) rotate(-90)" text-anchor="middle">gold</text></svg>"#,
        cx = left + side / 2.0,
        by = h - 6.0,
        cy = top + side / 2.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"<b a="x">&'"#), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn tick_labels_tell_every_tick_apart() {
        assert_eq!(tick_labels(&[0.0, 0.5, 1.0]), ["0", "0.5", "1"]);
        let lr = [0.0, 5e-5, 1e-4, 1.5e-4, 2e-4];
        assert_eq!(tick_labels(&lr), ["0", "5.0e-5", "1.0e-4", "1.5e-4", "2.0e-4"]);
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(-0.3, 0.3, 3), vec![-0.2, 0.0, 0.2]);
        let t = ticks(3.0, 1234.0, 5);
        assert!(t.first().unwrap() >= &3.0 && t.last().unwrap() <= &1234.0 && t.len() >= 2);
    }

    #[test]
    fn line_chart_draws_each_series_and_escapes_names() {
        let s = vec![
            Series {
                name: "run <a>".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN)],
                markers: true,
                scatter: false,
            },
            Series { name: "b".into(), points: vec![(0.0, 0.9), (2.0, 0.2)], markers: false, scatter: false },
        ];
        let svg = line_chart(&s, &LineOptions { title: "loss & lr".into(), ..Default::default() });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<path ").count(), 2);
        assert!(svg.contains("run &lt;a&gt;") && !svg.contains("run <a>"));
        assert!(svg.contains("loss &amp; lr"));
        assert!(!svg.contains("NaN"));
        let empty = line_chart(&[], &LineOptions::default());
        assert!(empty.contains("no data"));
    }

    #[test]
    fn heatmap_has_one_cell_per_entry() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let svg = heatmap("cm", &labels, &[vec![3.0, 1.0], vec![0.0, 4.0]], false);
        assert_eq!(svg.matches(r#"class="cell""#).count(), 4);
        let bars =
            bar_chart("f1", &labels, &[("p".into(), vec![0.5, 1.0]), ("r".into(), vec![0.25, f64::NAN])], Some(1.0));
        assert_eq!(bars.matches("<rect class=\"b").count(), 3);
    }
}
