//! The `script` transformation's language: embedded [Rhai](https://rhai.rs).
//!
//! Why Rhai: it is pure Rust (no interpreter to install, nothing to link), it is sandboxed by
//! construction (a script can reach only what the host registers: no files, no network, no
//! processes), and it counts operations and enforces limits on strings, arrays, maps, call
//! depth and expression depth, so a runaway script fails its record instead of the process.
//!
//! The script is compiled when the pipeline is validated (a syntax error is a validation
//! error with its path); the executor (`dagg-transforms`) runs the compiled AST with the
//! same [`base_engine`] plus per-record limits.
//!
//! What a script sees: `record`, the record (`record.x` / `record["x"]` read and set fields,
//! a missing one reads as `()`; integers are Rhai integers, floats Rhai floats, null is `()`),
//! and `now`, the batch's time as an RFC 3339 string.
//! What it does: changes `record` in place (`record.total = record.a * 2;`), sets
//! `record = ();` to remove the record (counted as filtered), or `throw "reason"` to send it to the dead letter
//! destination. Variables must be declared before use (strict mode), so a typo is a
//! validation error.

use rhai::{AST, Engine, Scope};

/// Variables the host provides to every script.
pub const SCRIPT_VARIABLES: &[&str] = &["record", "now"];

/// The sandboxed engine every script is compiled and run with: the standard library, no
/// module imports, no `eval`, `print`/`debug` discarded, strict variables.
pub fn base_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine.set_strict_variables(true);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_call_levels(32);
    engine.set_max_functions(256);
    engine.set_max_variables(1024);
    engine
}

/// A scope holding the host's variables and the step's own `variables` (so strict mode
/// accepts them).
pub fn host_scope(variables: &[&str]) -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push("record", rhai::Map::new());
    scope.push("now", rhai::ImmutableString::new());
    for name in variables {
        scope.push_constant(name.to_string(), ());
    }
    scope
}

/// Compiles `source`, or returns Rhai's message (with line and column).
pub fn compile(source: &str) -> Result<AST, String> {
    compile_with(source, &[])
}

/// Compiles `source` for a step whose `variables` have these names.
pub fn compile_with(source: &str, variables: &[&str]) -> Result<AST, String> {
    let engine = base_engine();
    engine.compile_with_scope(&host_scope(variables), source).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_reports_errors() {
        assert!(compile("record.total = record.a * 2;").is_ok());
        let e = compile("record.total = ;").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = compile("record.x = undefined_var;").unwrap_err();
        assert!(e.contains("undefined_var"), "{e}");
        assert!(compile(r#"import "os" as os;"#).is_ok(), "imports fail when run, not when compiled");
        assert!(compile("eval(\"1\")").is_err());
        assert!(compile("record.x = limit;").is_err());
        assert!(compile_with("record.x = limit;", &["limit"]).is_ok());
    }
}
