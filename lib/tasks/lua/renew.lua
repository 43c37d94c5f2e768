-- renew: extend a running attempt's lease (worker, periodically while the LLM call runs).
--
-- KEYS[1] task hash   KEYS[2] the slot pool holding the lease
-- ARGV[1] lease id   ARGV[2] now (ms)   ARGV[3] lease length (ms)
--
-- Returns 1 when renewed; 0 when the lease is gone or another attempt owns the task
-- (the caller should stop: a redelivery has taken over).

if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return 1
