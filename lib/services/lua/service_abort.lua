-- service_abort: undo a service admission whose fan-out failed (producer). Leaves nothing.
--
-- KEYS[1] rate window ZSET   KEYS[2] client-address window   KEYS[3] idempotency key
-- KEYS[4] pending services ZSET   KEYS[5] quota   KEYS[6] service hash
-- KEYS[7] service event stream
-- ARGV[1] service id
-- Returns 1 when undone, 0 when the service was not there.

local id = ARGV[1]
local cost = tonumber(redis.call('HGET', KEYS[6], 'cost') or '-1')
if cost < 0 then return 0 end
if cost > 0 then redis.call('INCRBY', KEYS[5], cost) end
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
if redis.call('GET', KEYS[3]) == id then redis.call('DEL', KEYS[3]) end
redis.call('ZREM', KEYS[4], id)
redis.call('DEL', KEYS[6], KEYS[7])
return 1
