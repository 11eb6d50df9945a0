//! Tries to leave the sandbox: read a file, read the environment, open a
//! socket to the port its config names (`{"port": N}`), and print. Reports each attempt in its deny reason.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(config: String, _claim: Claim) -> Verdict {
        let file = match std::fs::read_to_string("/etc/passwd") {
            Ok(_) => "file:READ".to_string(),
            Err(e) => format!("file:refused({e})"),
        };
        let env = match std::env::var("HOME") {
            Ok(v) => format!("env:READ({v})"),
            Err(_) => format!("env:empty({})", std::env::vars().count()),
        };
        // The test listens on the port it gives in the config, so only the
        // sandbox can refuse the connection.
        let port: String =
            config.split("\"port\":").nth(1).unwrap_or("80").chars().take_while(char::is_ascii_digit).collect();
        let net = match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            Ok(_) => "net:CONNECTED".to_string(),
            Err(e) => format!("net:refused({:?}: {e})", e.kind()),
        };
        println!("escape attempt finished");
        eprintln!("to stderr");
        Verdict::Deny(format!("{file} {env} {net}"))
    }
}
