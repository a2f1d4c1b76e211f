"""End-to-end tests of `edgewise-agent`: a real agent, Mosquitto, CNCF Distribution and scoring servers."""
