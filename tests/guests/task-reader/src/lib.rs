//! Reads the team's task list through the task-read import: denies a claim
//! while any blocker is unfinished, escalates a task whose metadata asks
//! for approval, approves the rest. Logs what it saw.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

include!("policy.rs");
