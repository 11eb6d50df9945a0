-- Settings added to policies: whether a policy replaces its hook's bundled
-- policy in its scope (it decides beside it otherwise), the JSON pointers
-- masked in its decision records, and the JSON Schema its config must fit.
ALTER TABLE policies ADD COLUMN replaces_bundled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE policies ADD COLUMN mask TEXT NOT NULL DEFAULT '[]';
ALTER TABLE policies ADD COLUMN config_schema TEXT;
