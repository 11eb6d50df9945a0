//! Host-side bindings for the worlds in `wit/`. The `agent` world imports
//! every `cairn:coord` interface, so it is generated first and the three
//! decision worlds reuse its interfaces: one Rust trait per interface,
//! implemented once in [`super::state`].

pub mod agent {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cairn:policy/agent",
    });
}

pub mod claim {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cairn:policy/claim-policy",
        with: { "cairn:coord": super::agent::cairn::coord },
    });
}

pub mod handoff {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cairn:policy/handoff-policy",
        with: { "cairn:coord": super::agent::cairn::coord },
    });
}

pub mod escalation {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cairn:policy/escalation-policy",
        with: { "cairn:coord": super::agent::cairn::coord },
    });
}

pub use agent::cairn::coord;
