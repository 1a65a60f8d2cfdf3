-- A job's place in a topic whose keys take turns (see flow_pop.lua).
-- A job in the queue has its rank there. A job waiting at rank r (0-based) behind its
-- key's head is placed (r + 1) rounds after the head, a round being one job of every key
-- with jobs waiting: rank(head) + (r + 1) * keys. That is exact while every waiting job
-- shares one priority and has a key, and an estimate otherwise (a key that runs dry
-- shortens later rounds; unkeyed jobs run once, not each round).
-- KEYS[1] queue     sorted set
-- KEYS[2] keyheads  hash: job key -> the id of its job in the queue
-- KEYS[3] keyof     hash: job id -> "<key>\t<score in hex>": its keyqueue entry, less the id
-- KEYS[4] keyqueue  sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- ARGV[1] job id
-- Returns {position or -1 if not queued, jobs queued in all}.
local id = ARGV[1]
local total = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[4])
local rank = redis.call('ZRANK', KEYS[1], id)
if rank then
  return {rank, total}
end
local tag = redis.call('HGET', KEYS[3], id)
local member = tag and string.format('%s%s', tag, id)
if not member or not redis.call('ZSCORE', KEYS[4], member) then
  return {-1, total}
end
local key = string.match(tag, '^[^\t]*')
local head_rank = redis.call('ZRANK', KEYS[1], redis.call('HGET', KEYS[2], key) or '')
if not head_rank then
  return {-1, total}
end
local behind = redis.call('ZLEXCOUNT', KEYS[4], string.format('[%s\t', key), string.format('(%s', member))
return {head_rank + (behind + 1) * redis.call('HLEN', KEYS[2]), total}
