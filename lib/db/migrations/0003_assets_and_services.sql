-- The product's data (issue #11): users, their assets (résumés, detailed résumés, job
-- descriptions), the summary cache, and services with their steps.
--
-- Ownership: every row hangs off users(id) with ON DELETE CASCADE, so erasing a user
-- (DELETE /api/me) is one DELETE. users.id is the caller's identity (a signed-in user id
-- or a trial id, lib/auth.py): no lookup turns an identity into a row id. A service keeps
-- its results when an asset it used is deleted (ON DELETE SET NULL).
--
-- Asset ids, service ids: uuid (gen_random_uuid(), built in since Postgres 13); the API
-- spells them as 32 hex digits. content_sha256 is the SHA-256 of the asset's text (UTF-8)
-- or, for a screenshot, of the image bytes: the summary cache's key. Every created_at is
-- indexed (time-series reads); per-user listings have (user_id, created_at DESC).

CREATE TABLE users (
    id          text        PRIMARY KEY,
    email       text,
    lang_pref   text        CHECK (lang_pref IN ('en', 'zh')),
    kind        text        NOT NULL CHECK (kind IN ('trial', 'user')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_created ON users (created_at);

CREATE TABLE resumes (
    id                     uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lang                   text        NOT NULL CHECK (lang IN ('en', 'zh')),
    original_text          text        NOT NULL,
    structured_json        jsonb,
    resume_summary_json    jsonb,
    resume_summary_tokens  integer,
    active                 boolean     NOT NULL DEFAULT true,
    -- Additions: where the text came from, its length, its hash (summary cache key).
    source                 text        NOT NULL CHECK (source IN ('text', 'pdf', 'docx')),
    chars                  integer     NOT NULL,
    content_sha256         text        NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resumes_user_active ON resumes (user_id, active);
CREATE INDEX resumes_user_created ON resumes (user_id, created_at DESC);
CREATE INDEX resumes_created ON resumes (created_at);

CREATE TABLE detailed_resumes (
    id                       uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                  text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lang                     text        NOT NULL CHECK (lang IN ('en', 'zh')),
    original_text            text        NOT NULL,
    detailed_summary_json    jsonb,
    detailed_summary_tokens  integer,
    source                   text        NOT NULL CHECK (source IN ('text', 'pdf', 'docx')),
    chars                    integer     NOT NULL,
    content_sha256           text        NOT NULL,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX detailed_resumes_user_created ON detailed_resumes (user_id, created_at DESC);
CREATE INDEX detailed_resumes_created ON detailed_resumes (created_at);

-- A job description is a text or a screenshot (kept here, as bytea, for the vision route;
-- at most UPLOAD_MAX_IMAGE_BYTES, 4 MiB). raw_text is NULL for a screenshot.
CREATE TABLE job_descriptions (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lang                text        NOT NULL CHECK (lang IN ('en', 'zh')),
    raw_text            text,
    parsed_json         jsonb,
    job_summary_json    jsonb,
    job_summary_tokens  integer,
    image               bytea,
    image_mime          text        CHECK (image_mime IN ('image/png', 'image/jpeg', 'image/webp')),
    source              text        NOT NULL CHECK (source IN ('text', 'pdf', 'docx', 'image')),
    chars               integer     NOT NULL,
    content_sha256      text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((raw_text IS NULL) = (image IS NOT NULL)),
    CHECK ((image IS NULL) = (image_mime IS NULL))
);
CREATE INDEX job_descriptions_user_created ON job_descriptions (user_id, created_at DESC);
CREATE INDEX job_descriptions_created ON job_descriptions (created_at);

-- A summary already made of the same content, by the same template, model, prompt
-- version and output language, is not made again. Per user: erasing a user erases the
-- summaries of their documents, and one user's cache hit never tells another anything.
CREATE TABLE summary_cache (
    user_id         text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content_sha256  text        NOT NULL,
    template        text        NOT NULL,
    lang            text        NOT NULL CHECK (lang IN ('en', 'zh')),
    model           text        NOT NULL,
    prompt_version  text        NOT NULL,
    result_json     jsonb       NOT NULL,
    tokens          integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, content_sha256, template, lang, model, prompt_version)
);
CREATE INDEX summary_cache_created ON summary_cache (created_at);

CREATE TABLE services (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    resume_id           uuid        REFERENCES resumes (id) ON DELETE SET NULL,
    job_id              uuid        REFERENCES job_descriptions (id) ON DELETE SET NULL,
    detailed_resume_id  uuid        REFERENCES detailed_resumes (id) ON DELETE SET NULL,
    status              text        NOT NULL DEFAULT 'created'
                                    CHECK (status IN ('created', 'running', 'done', 'error')),
    depth               text        NOT NULL CHECK (depth IN ('a', 'b', 'c')),
    lang                text        NOT NULL CHECK (lang IN ('en', 'zh')),
    tier                text        CHECK (tier IN ('paid', 'free')),
    cost                numeric(18, 8) NOT NULL DEFAULT 0,
    error               text,
    -- The request's idempotency key: the same request returns the same service.
    idem_key            text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX services_user_created ON services (user_id, created_at);
CREATE INDEX services_created ON services (created_at);
CREATE UNIQUE INDEX services_user_idem ON services (user_id, idem_key) WHERE idem_key IS NOT NULL;
-- The pending-services limit counts these.
CREATE INDEX services_user_pending ON services (user_id) WHERE status IN ('created', 'running');

-- One row per step of a service; (service_id, step) unique: a step is claimed once.
CREATE TABLE service_steps (
    service_id   uuid        NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    step         text        NOT NULL CHECK (step IN (
                     'resume_summary', 'detailed_resume_summary', 'job_summary',
                     'job_match', 'resume_customize', 'interview_prep')),
    task_id      text,
    status       text        NOT NULL DEFAULT 'created'
                             CHECK (status IN ('created', 'running', 'done', 'error', 'cached')),
    model        text,
    tokens       integer,
    cost         numeric(18, 8),
    result_json  jsonb,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, step)
);
CREATE INDEX service_steps_created ON service_steps (created_at);
CREATE INDEX service_steps_task ON service_steps (task_id) WHERE task_id IS NOT NULL;
