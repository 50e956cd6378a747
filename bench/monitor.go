package bench

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
)

// offsets reads end offsets and a group's committed offsets.
type offsets struct {
	cl         *kafka.Client
	topic      string
	partitions []int
}

func newOffsets(brokers []string, topic string, partitions int) *offsets {
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	return &offsets{cl: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}, topic: topic, partitions: ps}
}

// End returns the sum of the partitions' end offsets (= messages, on a fresh topic).
func (o *offsets) End(ctx context.Context) (map[int]int64, int64, error) {
	var reqs []kafka.OffsetRequest
	for _, p := range o.partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := o.cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{o.topic: reqs}})
	if err != nil {
		return nil, 0, err
	}
	out := map[int]int64{}
	var sum int64
	for _, po := range resp.Topics[o.topic] {
		if po.Error != nil {
			return nil, 0, fmt.Errorf("list offsets %s/%d: %w", o.topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
		sum += po.LastOffset
	}
	if len(out) != len(o.partitions) {
		return nil, 0, fmt.Errorf("list offsets %s: %d of %d partitions", o.topic, len(out), len(o.partitions))
	}
	return out, sum, nil
}

// Committed returns the sum over partitions of the group's committed offsets (0 when none).
func (o *offsets) Committed(ctx context.Context, group string) (int64, error) {
	resp, err := o.cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{o.topic: o.partitions}})
	if err != nil {
		return 0, err
	}
	if resp.Error != nil {
		return 0, resp.Error
	}
	var sum int64
	for _, p := range resp.Topics[o.topic] {
		if p.CommittedOffset > 0 {
			sum += p.CommittedOffset
		}
	}
	return sum, nil
}

// createTopics creates the topics on a real broker (kfake seeds its own); existing topics
// are fine.
func createTopics(ctx context.Context, brokers []string, partitions int, topics, dlqs []string) error {
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	var cfgs []kafka.TopicConfig
	for _, t := range topics {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: -1})
	}
	for _, t := range dlqs {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: t, NumPartitions: 3, ReplicationFactor: -1})
	}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: cfgs})
	if err != nil {
		return err
	}
	for t, e := range resp.Errors {
		if e != nil && e != kafka.TopicAlreadyExists {
			return fmt.Errorf("create topic %s: %w", t, e)
		}
	}
	return nil
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
