//! Cleaning steps, exact de-duplication and train/test overlap.

use finetune_data::clean::{collapse_whitespace, count_duplicates, decode_entities, strip_tags};
use finetune_data::{clean, dedup, overlap, CleanOptions, Example, Label, Normalization};

fn ex(text: &str, label: &str, line: u64) -> Example {
    Example { text: text.into(), text_pair: None, label: Some(Label::Single(label.into())), line }
}

#[test]
fn html_tags_and_entities() {
    assert_eq!(strip_tags("<p>Great</p><p>movie</p>"), " Great  movie ");
    assert_eq!(strip_tags("<b>bo</b>ld"), "bold");
    assert_eq!(strip_tags("a < b and c<d"), "a < b and c<d");
    assert_eq!(strip_tags("x<!-- a > b -->y"), "xy");
    assert_eq!(strip_tags("pre<script>var a = '<b>';</script>post"), "pre post");
    assert_eq!(strip_tags("pre<STYLE>p{}</Style >post"), "pre post");
    assert_eq!(strip_tags("never closed <b"), "never closed <b");
    assert_eq!(
        decode_entities("Tom &amp; Jerry &lt;3 &quot;x&quot; &#39;y&#x27; caf&eacute;"),
        "Tom & Jerry <3 \"x\" 'y' café"
    );
    assert_eq!(
        decode_entities("&bogus; & &amp &#0; &#xD800; &#99999999999;"),
        "&bogus; & &amp \u{FFFD} \u{FFFD} \u{FFFD}"
    );
    let opts = CleanOptions { strip_html: true, collapse_whitespace: true, ..Default::default() };
    assert_eq!(clean("<div>Fish &amp;&nbsp;chips</div>\n<br/>  yum", &opts), "Fish & chips yum");
}

#[test]
fn unicode_normalisation() {
    let decomposed = "cafe\u{301}";
    let nfc = CleanOptions { normalization: Some(Normalization::Nfc), ..Default::default() };
    assert_eq!(clean(decomposed, &nfc), "caf\u{e9}");
    assert_eq!(clean("\u{FB01}le \u{FF12}", &nfc), "\u{FB01}le \u{FF12}");
    let nfkc = CleanOptions { normalization: Some(Normalization::Nfkc), ..Default::default() };
    assert_eq!(clean("\u{FB01}le \u{FF12}", &nfkc), "file 2");
}

#[test]
fn control_characters_and_whitespace() {
    let opts = CleanOptions { remove_control: true, ..Default::default() };
    assert_eq!(clean("a\u{0}b\u{7}c\u{200B}d\u{FEFF}e\tf\ng", &opts), "abcde f g");
    assert_eq!(collapse_whitespace("  a \t\n b\u{00A0}c  "), "a b c");
    assert_eq!(clean("  keep \n as is ", &CleanOptions::default()), "  keep \n as is ");
    assert_eq!(clean(" <i>A</i>\u{0}  b&amp;c ", &CleanOptions::all()), "A b&c");
}

#[test]
fn dedup_keeps_first_and_reports_conflicts() {
    let mut v = vec![
        ex("Good film", "pos", 2),
        ex("Bad film", "neg", 3),
        ex("Good  film ", "pos", 4),
        ex("cafe\u{301}", "pos", 5),
        ex("caf\u{e9}", "neg", 6),
        ex("good film", "pos", 7),
    ];
    assert_eq!(count_duplicates(&v), 2);
    let r = dedup(&mut v);
    assert_eq!(r.removed, 2);
    assert_eq!(r.conflicting_labels, 1);
    assert_eq!(r.first_lines, [4, 6]);
    assert_eq!(v.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 5, 7]);
}

#[test]
fn dedup_considers_text_pair() {
    let mut a = ex("same", "x", 1);
    a.text_pair = Some("one".into());
    let mut b = ex("same", "x", 2);
    b.text_pair = Some("two".into());
    let mut v = vec![a.clone(), b, a];
    assert_eq!(dedup(&mut v).removed, 1);
    assert_eq!(v.len(), 2);
}

#[test]
fn train_test_overlap() {
    let train = vec![ex("alpha", "a", 2), ex("beta", "b", 3), ex("gamma", "a", 4)];
    let test = vec![ex("beta", "b", 2), ex("delta", "a", 3), ex(" alpha ", "b", 4), ex("beta", "b", 5)];
    let o = overlap(&train, &test);
    assert_eq!(o.eval_examples, 4);
    assert_eq!(o.overlapping, 3);
    assert_eq!(o.first_lines, [2, 4, 5]);
    assert_eq!(
        o.warning("train.csv", "test.csv").unwrap(),
        "warning: 3 of 4 examples in test.csv (75.00%) also appear in train.csv"
    );
    assert!(overlap(&train, &[ex("new", "a", 1)]).warning("a", "b").is_none());
}
