mod common;

#[test]
fn sequence_fixtures() {
    let n = common::run_fixture_file("sequence.json");
    assert!(n >= 300, "only {n} cases");
}
