-- service_close: end a service (its finish or fail transition carried out). Idempotent.
-- A failed service is refunded once and releases its request (the same request may be
-- sent again); both leave the user's pending set and the due set, and tell the readers.
--
-- KEYS[1] service hash   KEYS[2] service event stream   KEYS[3] pending services ZSET
-- KEYS[4] services' due set   KEYS[5] quota   KEYS[6] idempotency key
-- ARGV[1] service id   ARGV[2] status: "done" | "error"   ARGV[3] now (ms)
-- ARGV[4] events ttl (s)   ARGV[5] error code ('' when done)
-- Returns {1, refunded} when closed now, {0, 0} when it was closed already or is gone.

local id = ARGV[1]
local s = redis.call('HMGET', KEYS[1], 'stage', 'cost', 'tier', 'depth')
if not s[1] or s[1] == 'closed' then
  redis.call('ZREM', KEYS[4], id)
  return {0, 0}
end
local refunded = 0
if ARGV[2] ~= 'done' then
  refunded = tonumber(s[2] or '0')
  if refunded > 0 then redis.call('INCRBY', KEYS[5], refunded) end
  if redis.call('GET', KEYS[6]) == id then redis.call('DEL', KEYS[6]) end
end
redis.call('HSET', KEYS[1], 'stage', 'closed', 'status', ARGV[2], 'finished_ms', ARGV[3],
  'refunded', refunded)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
local data = {status = ARGV[2], tier = s[3], depth = s[4], refunded = refunded}
if ARGV[5] ~= '' then data.error = ARGV[5] end
redis.call('XADD', KEYS[2], '*', 'type', 'service', 'data', cjson.encode(data))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return {1, refunded}
