//! The decision, over plain facts gathered by the component, so that it is
//! tested natively.

use serde::Deserialize;

/// The policy's config (`config.schema.json` documents it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Most claims an agent may hold open at once (claimed, not completed).
    pub max_open_claims: Option<u32>,
    /// When set, only agents matching one of these may claim.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Agents matching any of these may not claim; wins over `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Largest budget one claim may ask for, whatever the subtask's budget.
    pub max_budget_usdc: Option<f64>,
    /// Subtask ids (or glob patterns) that need the creator's approval:
    /// claims on them escalate.
    #[serde(default)]
    pub approval_required: Vec<String>,
    /// Refuse claims once the contract's `deadline` has passed.
    #[serde(default = "yes")]
    pub refuse_after_deadline: bool,
    /// Refuse claims on work whose blockers are not completed.
    #[serde(default = "yes")]
    pub refuse_blocked: bool,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        serde_json::from_str("{}").expect("the empty config is valid")
    }
}

impl Config {
    /// `{}` for an empty config; a parse error names the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map_err(|e| format!("bad config: {e}"))
    }
}

/// What is being claimed, as the component found it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// For messages: `subtask research` or `task #3`.
    pub label: String,
    /// The id patterns in `approval_required` match against.
    pub id: String,
    /// Whether it can be taken: open / pending.
    pub open: bool,
    /// Who holds it, if anyone.
    pub holder: Option<String>,
    /// Its budget, if it states one.
    pub budget_usdc: Option<f64>,
    /// Blockers not completed yet.
    pub open_blockers: Vec<String>,
    /// The target itself asks for approval (`requires_approval`).
    pub requires_approval: bool,
}

/// Everything the decision needs.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub claimant: String,
    /// None: the target does not exist (or cannot be seen).
    pub target: Option<Target>,
    /// Seconds since the epoch, now and at the deadline.
    pub now: i64,
    pub deadline: Option<i64>,
    /// The budget the claim asks for (`budget_usdc` in the request).
    pub requested_budget: Option<f64>,
    /// Claims the claimant already holds open.
    pub open_claims: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Approve,
    Deny(String),
    Escalate(String),
}

pub fn decide(config: &Config, f: &Facts) -> Decision {
    use Decision::*;
    if let Some(p) = config.deny.iter().find(|p| glob(p, &f.claimant)) {
        return Deny(format!("{} may not claim here (matches deny pattern {p:?})", f.claimant));
    }
    if !config.allow.is_empty() && !config.allow.iter().any(|p| glob(p, &f.claimant)) {
        return Deny(format!("{} is not on this policy's allow list", f.claimant));
    }
    let Some(t) = &f.target else {
        return Deny("no such task or subtask".into());
    };
    if let Some(h) = t.holder.as_deref().filter(|h| *h != f.claimant) {
        return Deny(format!("{} is already claimed by {h}", t.label));
    }
    if !t.open && t.holder.as_deref() != Some(f.claimant.as_str()) {
        return Deny(format!("{} is not open", t.label));
    }
    if config.refuse_blocked && !t.open_blockers.is_empty() {
        return Deny(format!("{} is blocked by {}, not yet completed", t.label, t.open_blockers.join(", ")));
    }
    if config.refuse_after_deadline
        && let Some(d) = f.deadline
        && f.now > d
    {
        return Deny("the contract's deadline has passed".into());
    }
    if let Some(asked) = f.requested_budget {
        if let Some(b) = t.budget_usdc
            && asked > b
        {
            return Deny(format!("the claim asks {asked} USDC, over the {}'s budget of {b} USDC", t.label));
        }
        if let Some(max) = config.max_budget_usdc
            && asked > max
        {
            return Deny(format!("the claim asks {asked} USDC, over this policy's ceiling of {max} USDC per claim"));
        }
    }
    if let (Some(max), Some(b)) = (config.max_budget_usdc, t.budget_usdc)
        && f.requested_budget.is_none()
        && b > max
    {
        return Deny(format!("the {} carries {b} USDC, over this policy's ceiling of {max} USDC per claim", t.label));
    }
    if let Some(max) = config.max_open_claims
        && f.open_claims >= max
    {
        return Deny(format!(
            "{} already holds {} open claim(s), the most this policy allows",
            f.claimant, f.open_claims
        ));
    }
    if t.requires_approval || config.approval_required.iter().any(|p| glob(p, &t.id)) {
        return Escalate(format!("{} needs the creator's approval", t.label));
    }
    Approve
}

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// RFC 3339 (`2026-05-01T00:00:00Z`, or with an offset) to seconds since
/// the epoch; None if it is not one.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let m = num(s.len() - 5..s.len() - 3)? * 3600 + num(s.len() - 2..s.len())? * 60;
            if o.starts_with('-') { -m } else { m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(label: &str) -> Target {
        Target { label: label.into(), id: "research".into(), open: true, budget_usdc: Some(10.0), ..Target::default() }
    }

    fn facts(claimant: &str, target: Target) -> Facts {
        Facts { claimant: claimant.into(), target: Some(target), now: 100, ..Facts::default() }
    }

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn an_open_target_is_approved() {
        assert_eq!(decide(&Config::default(), &facts("bot", open("subtask research"))), Decision::Approve);
    }

    #[test]
    fn taken_blocked_and_missing_targets_are_denied() {
        let mut t = open("subtask research");
        t.holder = Some("other".into());
        t.open = false;
        assert_eq!(
            decide(&Config::default(), &facts("bot", t)),
            Decision::Deny("subtask research is already claimed by other".into())
        );
        let mut t = open("task #2");
        t.open_blockers = vec!["#1".into()];
        assert!(
            matches!(decide(&Config::default(), &facts("bot", t.clone())), Decision::Deny(r) if r.contains("blocked by #1"))
        );
        assert_eq!(decide(&config(r#"{"refuse_blocked": false}"#), &facts("bot", t)), Decision::Approve);
        let none = Facts { claimant: "bot".into(), ..Facts::default() };
        assert!(matches!(decide(&Config::default(), &none), Decision::Deny(_)));
    }

    #[test]
    fn allow_and_deny_lists_take_globs() {
        let c = config(r#"{"allow": ["research-*"], "deny": ["*-untrusted"]}"#);
        assert_eq!(decide(&c, &facts("research-bot", open("s"))), Decision::Approve);
        assert!(matches!(decide(&c, &facts("writer", open("s"))), Decision::Deny(r) if r.contains("allow list")));
        assert!(matches!(decide(&c, &facts("research-untrusted", open("s"))), Decision::Deny(r) if r.contains("deny")));
    }

    #[test]
    fn budgets_are_checked_against_the_subtask_and_the_ceiling() {
        let mut f = facts("bot", open("subtask research"));
        f.requested_budget = Some(25.0);
        assert_eq!(
            decide(&Config::default(), &f),
            Decision::Deny("the claim asks 25 USDC, over the subtask research's budget of 10 USDC".into())
        );
        f.requested_budget = Some(8.0);
        assert!(matches!(decide(&config(r#"{"max_budget_usdc": 5}"#), &f), Decision::Deny(r) if r.contains("ceiling")));
        f.requested_budget = None;
        assert!(
            matches!(decide(&config(r#"{"max_budget_usdc": 5}"#), &f), Decision::Deny(r) if r.contains("carries 10"))
        );
    }

    #[test]
    fn deadlines_open_claims_and_approvals() {
        let mut f = facts("bot", open("subtask research"));
        f.deadline = Some(50);
        assert_eq!(decide(&Config::default(), &f), Decision::Deny("the contract's deadline has passed".into()));
        assert_eq!(decide(&config(r#"{"refuse_after_deadline": false}"#), &f), Decision::Approve);
        let mut f = facts("bot", open("subtask research"));
        f.open_claims = 2;
        assert!(matches!(decide(&config(r#"{"max_open_claims": 2}"#), &f), Decision::Deny(r) if r.contains("2 open")));
        assert!(matches!(
            decide(&config(r#"{"approval_required": ["res*"]}"#), &facts("bot", open("s"))),
            Decision::Escalate(_)
        ));
    }

    #[test]
    fn globs_and_times_parse() {
        assert!(glob("*", "") && glob("a*c", "abbc") && glob("a?c", "abc") && !glob("a?c", "ac") && !glob("ab", "abc"));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-05-01T00:00:00Z"), Some(1_777_593_600));
        assert_eq!(parse_time("2026-05-01T02:00:00.5+02:00"), Some(1_777_593_600));
        assert_eq!(parse_time("May 1st"), None);
        assert!(Config::parse(r#"{"nope": 1}"#).is_err());
    }
}
