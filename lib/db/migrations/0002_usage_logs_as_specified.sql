-- llm_usage_logs as the product specification names it: its columns in its order
-- (template → task_template_id, model → model_id, success → is_success, error_message
-- at most 500 characters), then this project's additions (source_id, currency, task_id,
-- attempt, is_degraded); indexes (user_id, created_at DESC), (task_template_id,
-- created_at DESC), plus (created_at) for the operator summary.
--
-- Every row of the 0001 table moves over with its id; the id sequence continues after
-- the largest one. The migration runs in one transaction (lib/db.py): a failure leaves
-- the 0001 table as it was.

ALTER TABLE llm_usage_logs RENAME TO llm_usage_logs_0001;
ALTER SEQUENCE llm_usage_logs_id_seq RENAME TO llm_usage_logs_0001_id_seq;
ALTER TABLE llm_usage_logs_0001 RENAME CONSTRAINT llm_usage_logs_pkey TO llm_usage_logs_0001_pkey;
ALTER TABLE llm_usage_logs_0001
    RENAME CONSTRAINT llm_usage_logs_source_id_key TO llm_usage_logs_0001_source_id_key;
DROP INDEX llm_usage_logs_user_created, llm_usage_logs_model_created, llm_usage_logs_created;

CREATE TABLE llm_usage_logs (
    id               bigserial PRIMARY KEY,
    user_id          text           NOT NULL,
    service_id       text           NOT NULL,
    task_template_id text           NOT NULL,
    provider         text           NOT NULL,
    model_id         text           NOT NULL,
    input_tokens     integer        NOT NULL DEFAULT 0,
    output_tokens    integer        NOT NULL DEFAULT 0,
    total_tokens     integer        NOT NULL DEFAULT 0,
    latency_ms       integer        NOT NULL DEFAULT 0,
    cost             numeric(18, 8) NOT NULL DEFAULT 0,
    is_stream        boolean        NOT NULL DEFAULT false,
    is_success       boolean        NOT NULL,
    error_message    varchar(500),
    created_at       timestamptz    NOT NULL DEFAULT now(),
    -- Additions. source_id = "<stream entry id>:<index in entry>": a re-flushed entry
    -- inserts nothing twice.
    source_id        text           NOT NULL UNIQUE,
    currency         text           NOT NULL DEFAULT 'CNY',
    task_id          text,
    attempt          integer,
    is_degraded      boolean        NOT NULL DEFAULT false
);

INSERT INTO llm_usage_logs (
    id, user_id, service_id, task_template_id, provider, model_id, input_tokens,
    output_tokens, total_tokens, latency_ms, cost, is_stream, is_success, error_message,
    created_at, source_id, currency
)
SELECT
    id, user_id, service_id, template, provider, model, input_tokens,
    output_tokens, total_tokens, latency_ms, cost, is_stream, success,
    -- 0001 did not bound it; the writers always cut at 500 (lib/llm/attempt.py).
    left(error_message, 500),
    created_at, source_id, currency
FROM llm_usage_logs_0001
ORDER BY id;

SELECT setval(
    pg_get_serial_sequence('llm_usage_logs', 'id'),
    coalesce((SELECT max(id) FROM llm_usage_logs), 0) + 1,
    false
);

DROP TABLE llm_usage_logs_0001;

CREATE INDEX llm_usage_logs_user_created ON llm_usage_logs (user_id, created_at DESC);
CREATE INDEX llm_usage_logs_template_created
    ON llm_usage_logs (task_template_id, created_at DESC);
CREATE INDEX llm_usage_logs_created ON llm_usage_logs (created_at);
