-- Decision records name a contract's scope as settings and the CLI do:
-- `stash:NAME` (they used to say `contract:NAME`).
UPDATE policy_decisions SET scope = 'stash:' || substr(scope, 10) WHERE scope LIKE 'contract:%';
