-- include: keyed
-- Push jobs onto a topic with turns between job keys (see flow_pop.lua): a keyed job
-- waits in the keyqueue, and only its key's first job (the key's head) is in the queue.
-- Jobs without a key are pushed as push.lua does.
-- KEYS[1]  queue      sorted set: job id -> score
-- KEYS[2]  seq        counter giving each push its place within a priority
-- KEYS[3]  entities   hash: entity id -> job id (active jobs only)
-- KEYS[4]  leases     sorted set: a pushed id is no longer leased
-- KEYS[5]  scheduled  sorted set: a pushed id is no longer scheduled
-- KEYS[6]  schedprio  hash: scheduled job id -> priority
-- KEYS[7]  wake       list that idle workers block on (BLPOP)
-- KEYS[8]  metrics    hash: the topic's counters
-- KEYS[9]  keyheads   hash: job key -> the id of its job in the queue
-- KEYS[10] keyof      hash: job id -> "<key>\t<14 hex digits of its score>" (its keyqueue entry, without the id)
-- KEYS[11] keyqueue   sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- ARGV[1] a tally for the metrics hash ("field=integer" pairs), or ""
-- ARGV[2..] quadruples: job id, priority (-100..100), entity id or "", job key or ""
-- Returns the number of ids added (an id already queued, in the queue or behind its key, keeps its place).
local SHIFT = 17592186044416 -- 2^44, as in push.lua
local added = 0
for i = 2, #ARGV, 4 do
  local id, priority, entity, key = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  if key == '' then
    if not redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZADD', KEYS[1], (100 - priority) * SHIFT + redis.call('INCR', KEYS[2]), id)
      added = added + 1
    end
  elseif not redis.call('ZSCORE', KEYS[1], id) and not redis.call('HGET', KEYS[10], id) then
    keyed_push(KEYS[1], KEYS[2], KEYS[9], KEYS[10], KEYS[11], key, id, priority)
    added = added + 1
  end
  if entity ~= '' then
    redis.call('HSET', KEYS[3], entity, id)
  end
end
for field, amount in string.gmatch(ARGV[1], '(%S+)=(%S+)') do
  redis.call('HINCRBY', KEYS[8], field, amount)
end
if added > 0 then
  local tokens = {}
  for i = 1, math.min(added, 64) do tokens[i] = '1' end
  redis.call('RPUSH', KEYS[7], unpack(tokens))
  redis.call('LTRIM', KEYS[7], 0, 63)
end
return added
