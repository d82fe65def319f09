// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Chainlink AggregatorV3Interface look-alike whose round a test sets.
contract MockAggregator {
    uint8 public decimals;
    string public description;
    uint256 public constant version = 4;

    uint80 private _roundId;
    int256 private _answer;
    uint256 private _startedAt;
    uint256 private _updatedAt;
    uint80 private _answeredInRound;

    constructor(uint8 decimals_, string memory description_) {
        decimals = decimals_;
        description = description_;
    }

    function setRound(int256 answer, uint256 updatedAt) external {
        _roundId += 1;
        _answer = answer;
        _startedAt = updatedAt;
        _updatedAt = updatedAt;
        _answeredInRound = _roundId;
    }

    /// A new round whose answer was carried over from `answeredInRound` (an incomplete round).
    function setIncompleteRound(int256 answer, uint256 updatedAt, uint80 answeredInRound) external {
        _roundId += 1;
        _answer = answer;
        _startedAt = updatedAt;
        _updatedAt = updatedAt;
        _answeredInRound = answeredInRound;
    }

    /// A feed migrated to another scale: the answer is re-expressed, the round unchanged.
    function setDecimals(uint8 decimals_, int256 answer) external {
        decimals = decimals_;
        _answer = answer;
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return (_roundId, _answer, _startedAt, _updatedAt, _answeredInRound);
    }
}
