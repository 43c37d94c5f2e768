-- append_token: write a token batch (or a restart) for the attempt that owns the task (worker).
--
-- Fenced: an attempt that lost the task (its lease expired and another delivery took over,
-- or the task ended) writes nothing, so a zombie's late tokens never mix with the new
-- attempt's text. Idempotent: each batch carries `n`, the deltas written so far in the
-- attempt; a batch whose `n` is not past the last one written is a retry of a write that
-- did happen (its reply was lost), and is acknowledged without writing it twice.
--
-- KEYS[1] task hash   KEYS[2] event stream
-- ARGV[1] the attempt's lease member   ARGV[2] event type: "token" | "restart"
-- ARGV[3] data JSON   ARGV[4] n (deltas so far in this attempt)
--
-- Returns the new entry id, "dup" (this batch was written already) or "fenced".

if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 'fenced' end
if ARGV[2] == 'token' then
  local n = tonumber(ARGV[4])
  if n <= tonumber(redis.call('HGET', KEYS[1], 'tok_n') or '-1') then return 'dup' end
  redis.call('HSET', KEYS[1], 'tok_n', n)
end
return redis.call('XADD', KEYS[2], '*', 'type', ARGV[2], 'data', ARGV[3], 'n', ARGV[4])
