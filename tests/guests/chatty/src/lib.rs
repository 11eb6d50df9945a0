//! Writes as much as its config says, then approves: `{"lines": N,
//! "line_bytes": B, "stdout_bytes": O, "stderr_bytes": E}` logs N lines of B
//! bytes each, and prints O bytes to stdout and E to stderr (with `print!`,
//! which panics if a write is refused).
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

use std::io::Write;

struct Policy;
export!(Policy);

fn number(config: &str, key: &str) -> usize {
    let digits: String = config
        .split(&format!("\"{key}\":"))
        .nth(1)
        .unwrap_or("0")
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

impl Guest for Policy {
    fn decide(config: String, _claim: Claim) -> Verdict {
        let line = "x".repeat(number(&config, "line_bytes"));
        for i in 0..number(&config, "lines") {
            cairn::coord::log::log(cairn::coord::log::Level::Info, &format!("{i}:{line}"));
        }
        // In chunks, as a chatty program would print.
        let chunk = "o".repeat(1000);
        for _ in 0..number(&config, "stdout_bytes") / 1000 {
            print!("{chunk}");
        }
        let chunk = "e".repeat(1000);
        for _ in 0..number(&config, "stderr_bytes") / 1000 {
            eprint!("{chunk}");
        }
        std::io::stdout().flush().expect("flush stdout");
        Verdict::Approve
    }
}
