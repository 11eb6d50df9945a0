//! The ways a guest fails, chosen by its config so that one component per
//! world covers them all: `{"fail": "trap" | "loop" | "memory" | "huge"}`.

/// Fails as `config` says; for `huge`, returns 100 MB of text for the
/// caller to put in its result.
pub fn fail(config: &str) -> String {
    let how = ["loop", "memory", "huge"].into_iter().find(|h| config.contains(&format!("\"{h}\"")));
    match how {
        Some("loop") => loop {
            std::hint::black_box(());
        },
        Some("memory") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Some(_) => "x".repeat(100 << 20),
        None => panic!("policy bug (config {config})"),
    }
}
