-- append_token: write an event of the attempt that owns the task (worker): a token batch, a
-- restart, or a `started` when the LLM layer falls back to another model.
--
-- Fenced: an attempt that lost the task (its lease expired and another delivery took over,
-- or the task ended) writes nothing, so a zombie's late tokens never mix with the new
-- attempt's text. Idempotent: each batch carries `n`, the deltas written so far in the
-- attempt; a batch whose `n` is not past the last one written is a retry of a write that
-- did happen (its reply was lost), and is acknowledged without writing it twice.
-- A `started` also moves the task hash to the new model (`model`, and the `provider` and
-- `out_price` a dead attempt's usage row is priced with, lib/lua/attempt_row.lua); its
-- entry carries `n` too, so that row still counts the tokens streamed before it. A second
-- `started` for the model the task is on already is a retry: "dup".
--
-- KEYS[1] task hash   KEYS[2] event stream
-- ARGV[1] the attempt's lease member   ARGV[2] event type: "token" | "restart" | "started"
-- ARGV[3] data JSON   ARGV[4] n (deltas so far in this attempt)
-- ARGV[5] model   ARGV[6] provider   ARGV[7] output price per million tokens ("started" only)
--
-- Returns the new entry id, "dup" (this batch was written already) or "fenced".

if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 'fenced' end
if ARGV[2] == 'token' then
  local n = tonumber(ARGV[4])
  if n <= tonumber(redis.call('HGET', KEYS[1], 'tok_n') or '-1') then return 'dup' end
  redis.call('HSET', KEYS[1], 'tok_n', n)
elseif ARGV[2] == 'started' then
  -- Already on that model: a retry of a switch that was written (its reply was lost).
  if redis.call('HGET', KEYS[1], 'model') == ARGV[5] then return 'dup' end
  redis.call('HSET', KEYS[1], 'model', ARGV[5], 'provider', ARGV[6], 'out_price', ARGV[7])
end
return redis.call('XADD', KEYS[2], '*', 'type', ARGV[2], 'data', ARGV[3], 'n', ARGV[4])
