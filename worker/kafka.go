package worker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// KafkaSecurity builds the TLS config and SASL mechanism shared by the consumer and the DLQ
// writer. TLS verification is always on.
func KafkaSecurity(c *Config) (*tls.Config, sasl.Mechanism, error) {
	var tlsCfg *tls.Config
	if c.KafkaTLSEnabled || c.KafkaTLSCAFile != "" || c.KafkaTLSCertFile != "" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.KafkaTLSServerName}
		if c.KafkaTLSCAFile != "" {
			pem, err := os.ReadFile(c.KafkaTLSCAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("KAFKA_TLS_CA_FILE %s: no PEM certificates found", c.KafkaTLSCAFile)
			}
			tlsCfg.RootCAs = pool
		}
		if c.KafkaTLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.KafkaTLSCertFile, c.KafkaTLSKeyFile)
			if err != nil {
				return nil, nil, fmt.Errorf("KAFKA_TLS_CERT_FILE/KEY_FILE: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		}
	}
	var mech sasl.Mechanism
	switch strings.ToLower(c.KafkaSASLMechanism) {
	case "":
	case "plain":
		mech = plain.Mechanism{Username: c.KafkaSASLUsername, Password: c.KafkaSASLPassword}
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if strings.HasSuffix(strings.ToLower(c.KafkaSASLMechanism), "512") {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, c.KafkaSASLUsername, c.KafkaSASLPassword)
		if err != nil {
			return nil, nil, fmt.Errorf("KAFKA_SASL_MECHANISM %s: %w", c.KafkaSASLMechanism, err)
		}
		mech = m
	}
	return tlsCfg, mech, nil
}

// KafkaDialer is the consumer's dialer with c's security.
func KafkaDialer(tlsCfg *tls.Config, mech sasl.Mechanism) *kafka.Dialer {
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: tlsCfg, SASLMechanism: mech}
}

// KafkaTransport is the DLQ writer's and admin clients' transport with c's security.
func KafkaTransport(tlsCfg *tls.Config, mech sasl.Mechanism) *kafka.Transport {
	return &kafka.Transport{DialTimeout: 10 * time.Second, TLS: tlsCfg, SASL: mech}
}
