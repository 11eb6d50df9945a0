//! Host-side bindings for the worlds in `wit/`. The `agent` world imports
//! every `cairn:coord` interface, so it is generated first and the three
//! decision worlds reuse its interfaces: one Rust trait per interface,
//! implemented once in [`super::host`].
//!
//! Components built against `cairn:coord@0.1.0` keep loading: [`v0_1`]
//! binds the 0.1.0 imports by name, over the same record types (the
//! component model checks records by shape, and 0.1.0's are 0.2.0's), and
//! each 0.1.0 function calls its 0.2.0 twin. Their exports are the same
//! functions with the same shapes, so one pre-linked world serves both.

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

/// The `cairn:coord@0.1.0` imports, for components built before 0.2.0.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: ["../wit", "../wit/compat/coord@0.1.0"],
        inline: "
            package cairn:host-compat;
            world coord-v0-1 {
                import cairn:coord/stash-read@0.1.0;
                import cairn:coord/stash-write@0.1.0;
                import cairn:coord/stream-read@0.1.0;
                import cairn:coord/stream-write@0.1.0;
                import cairn:coord/task-read@0.1.0;
                import cairn:coord/log@0.1.0;
            }
        ",
        with: { "cairn:coord/types@0.1.0": super::agent::cairn::coord::types },
    });
}

pub use agent::cairn::coord;
