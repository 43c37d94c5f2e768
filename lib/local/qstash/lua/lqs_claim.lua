-- lqs_claim: move one due message to in-flight, honouring its flow-control key.
-- KEYS[1] due ZSET   KEYS[2] in-flight ZSET (score = lease expiry ms)   KEYS[3] message hash
-- KEYS[4] flow-control active ZSET   KEYS[5] flow-control starts ZSET   KEYS[6] flow-control waitlist
--   (KEYS[4..6] only when the message has a flow-control key)
-- ARGV[1] message id   ARGV[2] now ms   ARGV[3] lease ms
-- ARGV[4] parallelism (0 = none)   ARGV[5] rate (0 = none)   ARGV[6] rate period ms
-- Returns {1, retried} claimed; {0} not due or gone; {-1} parked on the waitlist;
-- {-2, next ms} rate limited (rescheduled).
local id = ARGV[1]
local now = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], id)
if not score or tonumber(score) > now then
  return {0}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], id)
  return {0}
end
local lease_until = now + tonumber(ARGV[3])
if KEYS[4] then
  -- Leases of attempts whose server died (and whose message is gone) must not hold a slot.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local parallelism = tonumber(ARGV[4])
  if parallelism > 0 and redis.call('ZCARD', KEYS[4]) >= parallelism then
    -- Keep the original score so the waitlist stays in publish order.
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[6], score, id)
    return {-1}
  end
  local rate = tonumber(ARGV[5])
  if rate > 0 then
    local period = tonumber(ARGV[6])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - period)
    if redis.call('ZCARD', KEYS[5]) >= rate then
      local oldest = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
      local next_ms = tonumber(oldest[2]) + period
      redis.call('ZADD', KEYS[1], next_ms, id)
      return {-2, next_ms}
    end
    redis.call('ZADD', KEYS[5], now, id .. ':' .. now)
    redis.call('PEXPIRE', KEYS[5], period * 2)
  end
  redis.call('ZADD', KEYS[4], lease_until, id)
end
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], lease_until, id)
return {1, redis.call('HGET', KEYS[3], 'retried') or '0'}
