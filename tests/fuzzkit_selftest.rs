//! The shared fuzz kit mutates deterministically and changes its input.

mod fuzzkit;

#[test]
fn mutations_are_seeded_and_change_the_input() {
    let input = b"model m { layers = 4; hidden = 64; }";
    let run = |seed| {
        let mut rng = fuzzkit::Rng::new(seed);
        (0..50)
            .map(|_| fuzzkit::mutate(input, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
    assert!(run(3).iter().filter(|m| m.as_slice() != input).count() > 40);
}
