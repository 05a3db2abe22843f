//! Compile-time checks: every diagnostic the macros emit has a fail case; hygiene has pass cases.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("../tests/ui/*/pass/*.rs");
    t.compile_fail("../tests/ui/*/fail/*.rs");
}
