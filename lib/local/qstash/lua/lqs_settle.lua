-- lqs_settle: settle one delivery attempt (done, retry, release, dead-letter, reclaim) and
-- free its flow-control slot, moving waiters back to the due set.
-- KEYS[1] in-flight ZSET   KEYS[2] message hash   KEYS[3] due ZSET   KEYS[4] live-id SET
-- KEYS[5] DLQ index ZSET   KEYS[6] DLQ entry hash
-- KEYS[7] flow-control active ZSET   KEYS[8] flow-control waitlist (only with a flow-control key)
-- ARGV[1] message id   ARGV[2] outcome: done | retry | release | dlq | reclaim
-- ARGV[3] now ms   ARGV[4] next due ms (retry, release, reclaim)   ARGV[5] retried (retry)
-- ARGV[6] parallelism (0 = none)   ARGV[7] DLQ id (dlq)   ARGV[8..] extra DLQ field, value pairs
-- Returns 1 when the message was settled, 0 when it was not in flight (or, for reclaim,
-- its lease had not expired), -1 when it had been cancelled meanwhile.
local id = ARGV[1]
local outcome = ARGV[2]
local now = tonumber(ARGV[3])
local lease = redis.call('ZSCORE', KEYS[1], id)
if not lease then
  return 0
end
if outcome == 'reclaim' and tonumber(lease) > now then
  return 0
end
redis.call('ZREM', KEYS[1], id)
if KEYS[7] then
  redis.call('ZREM', KEYS[7], id)
  local parallelism = tonumber(ARGV[6])
  local free = 1000000
  if parallelism > 0 then
    free = parallelism - redis.call('ZCARD', KEYS[7])
  end
  while free > 0 do
    local head = redis.call('ZPOPMIN', KEYS[8])
    if #head == 0 then
      break
    end
    redis.call('ZADD', KEYS[3], head[2], head[1])
    free = free - 1
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
if outcome == 'done' then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[4], id)
elseif outcome == 'dlq' then
  local entry = redis.call('HGETALL', KEYS[2])
  for i = 8, #ARGV do
    entry[#entry + 1] = ARGV[i]
  end
  entry[#entry + 1] = 'dlq_id'
  entry[#entry + 1] = ARGV[7]
  redis.call('HSET', KEYS[6], unpack(entry))
  redis.call('ZADD', KEYS[5], now, ARGV[7])
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[4], id)
else
  if outcome == 'retry' then
    redis.call('HSET', KEYS[2], 'retried', ARGV[5])
  end
  redis.call('ZADD', KEYS[3], ARGV[4], id)
end
return 1
