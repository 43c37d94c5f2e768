-- Release the usage drain's lock, unless another drain asked for one more pass meanwhile.
-- A drain that finds the lock held sets the "again" flag (then tries the lock once more):
-- the holder sees the flag here, atomically with its release, so rows queued during its
-- last read are never left behind with nobody draining them.
-- KEYS[1] lock key   KEYS[2] the "again" flag
-- ARGV[1] the token the lock was taken with
-- Returns 1 when released, 2 when the caller keeps the lock for one more pass (the flag
-- is cleared), 0 when the lock was gone or held by someone else.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then return 2 end
return redis.call('DEL', KEYS[1])
