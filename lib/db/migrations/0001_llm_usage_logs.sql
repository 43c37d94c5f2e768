-- Every LLM attempt (failed and fallback ones too), flushed in batches from the usage stream.
-- source_id = "<stream entry id>:<index in entry>": a re-flushed entry inserts nothing twice.
CREATE TABLE llm_usage_logs (
    id            bigserial PRIMARY KEY,
    source_id     text        NOT NULL UNIQUE,
    user_id       text        NOT NULL,
    service_id    text        NOT NULL,
    template      text        NOT NULL,
    provider      text        NOT NULL,
    model         text        NOT NULL,
    input_tokens  integer     NOT NULL DEFAULT 0,
    output_tokens integer     NOT NULL DEFAULT 0,
    total_tokens  integer     NOT NULL DEFAULT 0,
    latency_ms    integer     NOT NULL DEFAULT 0,
    cost          numeric(18, 8) NOT NULL DEFAULT 0,
    currency      text        NOT NULL DEFAULT 'CNY',
    is_stream     boolean     NOT NULL DEFAULT false,
    success       boolean     NOT NULL,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX llm_usage_logs_user_created ON llm_usage_logs (user_id, created_at);
CREATE INDEX llm_usage_logs_model_created ON llm_usage_logs (model, created_at);
CREATE INDEX llm_usage_logs_created ON llm_usage_logs (created_at);
