-- A job's place in its topic's queue.
-- KEYS[1] queue  sorted set
-- ARGV[1] job id
-- Returns {rank (0 runs next) or -1 if not queued, queue length}.
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
return {rank or -1, redis.call('ZCARD', KEYS[1])}
