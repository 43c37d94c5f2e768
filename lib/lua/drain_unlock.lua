-- Release a lock only if this caller still holds it (compare-and-delete).
-- KEYS[1] lock key
-- ARGV[1] the token the lock was taken with
-- Returns 1 when released, 0 when the lock was gone or held by someone else.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
