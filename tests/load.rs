//! The load driver against a real server, small: it must register, log
//! in, and deliver every message in order, and say so in its JSON lines.

mod common;

use std::process::Command;

use common::TestServer;

fn run(server: &TestServer, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-load"))
        .args([
            "--port",
            &server.addr.port().to_string(),
            "--sources",
            "4",
            "--register",
        ])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_owned)
        .collect()
}

fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + key.len()
        + 3;
    let rest = &json[start..];
    &rest[..rest.find([',', '}']).unwrap()]
}

#[test]
fn the_load_driver_logs_in_and_loses_nothing() {
    let server = TestServer::with_config(|c| {
        // The driver registers its accounts in band, as in make bench-peers.
        c.registration.max_per_network = 0;
        c.limits.max_connections_per_ip = 0;
        c.limits.max_unauthenticated = 0;
    });
    let login = run(&server, &["login", "--clients", "20"]);
    assert_eq!(field(&login[0], "scenario"), "\"login\"");
    assert_eq!(field(&login[0], "clients"), "20");
    let scram = run(&server, &["--scram", "login", "--clients", "5"]);
    assert_eq!(field(&scram[0], "mechanism"), "\"SCRAM-SHA-256\"");
    let messages = run(
        &server,
        &[
            "--prefix", "m", "messages", "--pairs", "3", "--window", "4", "--count", "50",
        ],
    );
    let m = &messages[0];
    assert_eq!(
        (field(m, "delivered"), field(m, "lost"), field(m, "out_of_order")),
        ("150", "0", "0"),
        "{m}"
    );
}
